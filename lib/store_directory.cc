#include "store_directory.h"

#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/utilities/options_util.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <vector>

#include "chunk_digest.h"
#include "coding.h"
#include "file_util.h"
#include "store_internal.h"

namespace ckptdb {
namespace fs = std::filesystem;

namespace {

constexpr char kIdentityHeader[] = "ckptdb store\n";

}  // namespace

bool IsDatabaseFileName(const std::string& name) {
  return name == "CURRENT" || name == "IDENTITY" || name == kIdentityFile ||
         name.starts_with("MANIFEST-") || name.starts_with("OPTIONS-") || name.ends_with(".log") ||
         name.ends_with(".sst");
}

std::string SalvageHint(const std::string& dir) {
  return "; nothing was changed. `ckpt-inspect verify " + dir +
         "` names what is damaged; `ckpt-inspect repair " + dir +
         "` salvages every intact step (doc/ckpt-inspect.md)";
}

Result<DirKind> ClassifyDirectory(const std::string& dir, size_t* table_files) {
  std::error_code ec;
  const fs::file_status status = fs::status(dir, ec);
  if (ec == std::errc::no_such_file_or_directory) return DirKind::kMissing;
  if (ec) return Status::IOError("cannot access " + dir + ": " + ec.message());
  if (!fs::is_directory(status)) {
    return Status::FailedPrecondition(dir + " is not a directory; nothing was changed");
  }
  bool empty = true;
  bool creating = false;
  bool database = false;
  size_t tables = 0;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name == kWriterLockFile || name == kReadersLockFile) continue;
    empty = false;
    if (name.ends_with(".sst")) ++tables;
    creating = creating || name == kCreatingMarker;
    database = database || IsDatabaseFileName(name);
  }
  if (ec) return Status::IOError("cannot list " + dir + ": " + ec.message());
  if (table_files != nullptr) *table_files = tables;
  if (creating) return DirKind::kCreating;
  if (empty) return DirKind::kEmpty;
  return database ? DirKind::kDatabase : DirKind::kForeign;
}

namespace {

// The MANIFEST file CURRENT names, for messages ("CURRENT" if unreadable).
std::string CurrentManifest(const std::string& dir) {
  std::ifstream current(fs::path(dir) / "CURRENT");
  std::string name;
  if (!std::getline(current, name) || name.empty()) return (fs::path(dir) / "CURRENT").string();
  return (fs::path(dir) / name).string();
}

std::vector<std::string> ExpectedFamilies() {
  std::vector<std::string> expected = {rocksdb::kDefaultColumnFamilyName, kChunksFamily,
                                       kIndexFamily, kManifestsFamily};
  std::sort(expected.begin(), expected.end());
  return expected;
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string joined;
  for (const std::string& name : names) joined += (joined.empty() ? "" : ", ") + name;
  return "{" + joined + "}";
}

// The newest OPTIONS-N file of `dir`, or "" when there is none.
Result<std::string> LatestOptionsFile(const std::string& dir) {
  std::error_code ec;
  std::string latest;
  uint64_t latest_number = 0;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with("OPTIONS-") || name.ends_with(".dbtmp")) continue;
    const std::string digits = name.substr(8);
    uint64_t number = 0;
    const auto [end_of_number, error] =
        std::from_chars(digits.data(), digits.data() + digits.size(), number);
    if (error != std::errc() || end_of_number != digits.data() + digits.size()) continue;
    if (latest.empty() || number > latest_number) {
      latest = it->path().string();
      latest_number = number;
    }
  }
  if (ec) return Status::IOError("cannot list " + dir + ": " + ec.message());
  return latest;
}

}  // namespace

Status CheckDatabaseFiles(const std::string& dir, bool has_identity) {
  const std::string not_a_store = dir + " is a RocksDB database but not a ckptdb store; nothing was changed";
  std::error_code ec;
  if (!fs::exists(fs::path(dir) / "CURRENT", ec)) {
    if (ec) return Status::IOError("cannot access " + dir + "/CURRENT: " + ec.message());
    if (!has_identity) {
      return Status::FailedPrecondition(
          dir + " is not a ckptdb store (it holds other files); nothing was changed");
    }
    return Status::Corruption(dir + "/CURRENT is missing" + SalvageHint(dir));
  }
  std::vector<std::string> families;
  rocksdb::Status listed = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &families);
  if (!listed.ok()) {
    if (!has_identity && !listed.IsCorruption()) return FromRocksDb(listed, "reading " + dir);
    return Status::Corruption("cannot read " + dir + "/CURRENT or the MANIFEST it names (" +
                              CurrentManifest(dir) + "): " + listed.ToString() + SalvageHint(dir));
  }
  std::sort(families.begin(), families.end());
  if (families != ExpectedFamilies()) {
    if (!has_identity) return Status::FailedPrecondition(not_a_store);
    return Status::Corruption(CurrentManifest(dir) + " lists the column families " +
                              JoinNames(families) + " where a ckptdb store has " +
                              JoinNames(ExpectedFamilies()) +
                              ": it is damaged or belongs to another database" + SalvageHint(dir));
  }
  return Status::OK();
}

Status CheckOptionsFile(const std::string& dir) {
  Result<std::string> options_file = LatestOptionsFile(dir);
  if (!options_file.ok()) return options_file.status();
  if (!options_file->empty()) {
    rocksdb::ConfigOptions config;
    config.ignore_unknown_options = true;
    config.ignore_unsupported_options = true;
    rocksdb::DBOptions loaded;
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    rocksdb::Status parsed =
        rocksdb::LoadOptionsFromFile(config, *options_file, &loaded, &descriptors);
    std::vector<std::string> named;
    for (const rocksdb::ColumnFamilyDescriptor& descriptor : descriptors) {
      named.push_back(descriptor.name);
    }
    std::sort(named.begin(), named.end());
    if (!parsed.ok()) {
      return Status::Corruption(*options_file + " is damaged (" + parsed.ToString() + ")" +
                                SalvageHint(dir));
    }
    if (named != ExpectedFamilies()) {
      return Status::Corruption(*options_file + " describes the column families " +
                                JoinNames(named) + ", not this store's" + SalvageHint(dir));
    }
  }
  return Status::OK();
}

std::string IdentityText(const StoreIdentity& identity) {
  return std::string(kIdentityHeader) + "format_version " +
         std::to_string(identity.format_version) + "\nstore_id " + HexEncode(identity.store_id) +
         "\nhash_secret " + HexEncode(identity.secret) + "\n";
}

Result<std::optional<StoreIdentity>> ReadIdentityFile(const std::string& dir) {
  const std::string path = (fs::path(dir) / kIdentityFile).string();
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    if (ec) return Status::IOError("cannot access " + path + ": " + ec.message());
    return std::optional<StoreIdentity>();
  }
  std::ifstream in(path, std::ios::binary);
  std::string contents;
  std::getline(in, contents, '\0');  // the whole file (it holds no NUL when intact)
  if (in.bad()) return Status::IOError("cannot read " + path);
  const Status damaged =
      Status::Corruption(path + " is damaged (not a ckptdb identity file)" + SalvageHint(dir));
  std::istringstream lines(contents);
  std::string header, version_name, id_name, secret_name, id_hex, secret_hex;
  uint32_t version = 0;
  if (!std::getline(lines, header) || header + "\n" != kIdentityHeader ||
      !(lines >> version_name >> version >> id_name >> id_hex >> secret_name >> secret_hex) ||
      version_name != "format_version" || id_name != "store_id" || secret_name != "hash_secret") {
    return damaged;
  }
  StoreIdentity identity;
  identity.format_version = version;
  std::optional<std::string> id = HexDecode(id_hex, HexCase::kLowerOnly);
  std::optional<std::string> secret = HexDecode(secret_hex, HexCase::kLowerOnly);
  if (!id || id->size() != 16 || !secret || secret->size() != ChunkHasher::kSecretSize) {
    return damaged;
  }
  identity.store_id = *id;
  identity.secret = *secret;
  if (IdentityText(identity) != contents) return damaged;
  return std::optional<StoreIdentity>(identity);
}

namespace {

// Readers' private RocksDB files (a secondary instance's) live in
// TMPDIR/ckptdb-readers-UID/ckptdb-reader-XXXXXX, beside a lock file its
// reader holds (flock) for its lifetime, so that a reader that was killed
// leaves nothing for long: every reader's open removes the folders whose
// lock nobody holds.
constexpr char kReadersParentPrefix[] = "ckptdb-readers-";
constexpr char kReaderDirPrefix[] = "ckptdb-reader-";
constexpr char kReaderLockFile[] = "reader.lock";
// A folder without its lock file is being set up, or was left by an older
// build: removed once it is this old.
constexpr auto kUnlockedReaderDirAge = std::chrono::minutes(10);

// Where this user's reader folders go: a folder of their own in TMPDIR, so
// that the sweep lists only them (swept in TMPDIR itself, each reader's open
// listed all of it: 10 ms more with 20,000 entries there). Another user
// could have taken the name first (TMPDIR is shared): a parent that is not
// a directory of this user's closed to everyone else is not used, and the
// folders go in TMPDIR itself, as older builds put them.
fs::path ReadersParent(const fs::path& temporary) {
  const uid_t user = ::geteuid();
  const fs::path parent = temporary / (kReadersParentPrefix + std::to_string(user));
  if (::mkdir(parent.c_str(), 0700) != 0 && errno != EEXIST) return temporary;
  struct stat st;
  if (::lstat(parent.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != user ||
      (st.st_mode & 0777) != 0700) {
    return temporary;
  }
  return parent;
}

// Whether `dir` belongs to a reader that is gone.
bool ReaderIsGone(const fs::path& dir) {
  const int fd = ::open((dir / kReaderLockFile).c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno != ENOENT) return false;
    std::error_code ec;
    const auto modified = fs::last_write_time(dir, ec);
    return !ec && fs::file_time_type::clock::now() - modified > kUnlockedReaderDirAge;
  }
  const bool unlocked = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
  ::close(fd);
  return unlocked;
}

void RemoveDeadReaderDirs(const fs::path& temporary) {
  std::error_code ec;
  for (fs::directory_iterator it(temporary, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_error;
    if (!it->path().filename().string().starts_with(kReaderDirPrefix) ||
        !it->is_directory(type_error) || it->is_symlink(type_error)) {
      continue;
    }
    if (ReaderIsGone(it->path())) {
      std::error_code removed;
      fs::remove_all(it->path(), removed);  // another user's folder stays: fine
    }
  }
}

}  // namespace

Result<std::pair<std::string, LockedFile>> NewReaderDir(const std::string& store_dir) {
  std::error_code ec;
  const fs::path temporary = fs::temp_directory_path(ec);
  if (ec) return Status::IOError("no temporary directory for a reader of " + store_dir);
  const fs::path parent = ReadersParent(temporary);
  RemoveDeadReaderDirs(parent);
  std::string pattern = (parent / (std::string(kReaderDirPrefix) + "XXXXXX")).string();
  if (mkdtemp(pattern.data()) == nullptr) {
    return Status::IOError("cannot create a temporary directory for a reader of " + store_dir +
                           ": " + std::strerror(errno));
  }
  const fs::path dir(pattern);
  const fs::path setup = dir / (std::string(kReaderLockFile) + ".new");
  Result<LockedFile> lock = TryLockExclusive(setup.string());
  if (lock.ok() && ::rename(setup.c_str(), (dir / kReaderLockFile).c_str()) != 0) {
    lock = Status::IOError("cannot set up " + pattern + ": " + std::strerror(errno));
  }
  if (!lock.ok()) {
    fs::remove_all(dir, ec);
    return lock.status();
  }
  return std::pair<std::string, LockedFile>(pattern, std::move(*lock));
}

namespace {

std::mutex claims_mutex;
std::set<std::string>& Claims() {
  static std::set<std::string>* claims = new std::set<std::string>();
  return *claims;
}

}  // namespace

WriterClaim& WriterClaim::operator=(WriterClaim&& other) noexcept {
  if (this != &other) {
    Release();
    path_ = std::exchange(other.path_, {});
  }
  return *this;
}

void WriterClaim::Release() {
  if (path_.empty()) return;
  std::lock_guard<std::mutex> lock(claims_mutex);
  Claims().erase(path_);
  path_.clear();
}

Result<WriterClaim> ClaimWriterInThisProcess(const std::string& dir) {
  std::error_code ec;
  const std::string path = fs::weakly_canonical(fs::absolute(dir, ec), ec).string();
  if (ec) return Status::IOError("cannot resolve " + dir + ": " + ec.message());
  std::lock_guard<std::mutex> lock(claims_mutex);
  if (!Claims().insert(path).second) {
    return Status::Busy("this process already has " + dir +
                        " open for writing (another Checkpointer of the same store, or a "
                        "repair): close it first");
  }
  return WriterClaim(path);
}

Status CheckNoInterruptedRepair(const std::string& dir) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_error;
    if (!it->path().filename().string().starts_with(kRepairDirPrefix) ||
        it->is_symlink(type_error) || !it->is_directory(type_error)) {
      continue;
    }
    if (fs::exists(it->path() / kRepairSwapMarker, type_error)) {
      return Status::Corruption(
          "a repair of " + dir + " stopped while it moved the rebuilt store's files in (" +
          it->path().string() + "); `ckpt-inspect repair " + dir +
          "` finishes it; nothing was changed");
    }
  }
  if (ec) return Status::IOError("cannot list " + dir + ": " + ec.message());
  return Status::OK();
}

namespace {

// Opens `path` for a lock: read-write, created if missing, or read-only
// where that is all the caller may (a flock needs no write access).
// nullopt when the file is missing and cannot be created.
Result<std::optional<int>> OpenLockFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0 && (errno == EACCES || errno == EROFS || errno == EPERM)) {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) return std::optional<int>();
  }
  if (fd < 0) return Status::IOError("cannot open " + path + ": " + std::strerror(errno));
  return std::optional<int>(fd);
}

Result<LockedFile> LockReaders(const std::string& dir, int operation, const std::string& busy) {
  const std::string path = (fs::path(dir) / kReadersLockFile).string();
  Result<std::optional<int>> fd = OpenLockFile(path);
  if (!fd.ok()) return fd.status();
  if (!fd->has_value()) return LockedFile();
  while (::flock(**fd, operation | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    const int error = errno;
    ::close(**fd);
    if (error == EWOULDBLOCK) return Status::Busy(busy);
    return Status::IOError("cannot lock " + path + ": " + std::strerror(error));
  }
  return LockedFile(**fd, path, false);
}

}  // namespace

Result<LockedFile> LockAsReader(const std::string& dir) {
  return LockReaders(dir, LOCK_SH,
                     "a repair of " + dir + " is running; open the store again once it is done");
}

Result<LockedFile> LockOutReaders(const std::string& dir) {
  return LockReaders(dir, LOCK_EX,
                     "readers have " + dir + " open (an evaluator, or ckpt-inspect); repair "
                     "rebuilds the store's files and needs it to itself: close them and run "
                     "repair again; nothing was changed");
}

}  // namespace ckptdb
