// Reading and mapping safetensors files (layout in safetensors.h); the
// header's validation is safetensors_header.cc, writing safetensors_write.cc.

#include "safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <system_error>
#include <utility>

#include "manifest.h"
#include "safetensors_internal.h"

namespace ckptdb {

namespace safetensors {

const SafetensorsDType* FindDType(DType dtype) {
  for (const SafetensorsDType& entry : kSafetensorsDTypes) {
    if (entry.dtype == dtype) return &entry;
  }
  return nullptr;
}

std::string ErrnoText(int error) { return std::generic_category().message(error); }

}  // namespace safetensors

namespace {

using namespace safetensors;

// Copies `size` bytes at `offset` of the data buffer into `out`.
using ReadData = std::function<Status(uint64_t offset, std::byte* out, uint64_t size)>;

// Builds the tree of a validated header, allocating each tensor and reading
// its bytes straight into it.
Result<SafetensorsFile> Materialize(ValidatedHeader header, const ReadData& read_data,
                                    const std::string& source) {
  Result<Tree> tree = BuildTree(header.nodes);
  if (!tree.ok()) return tree.status().WithContext(source);
  header.nodes = std::vector<ManifestNode>();  // freed before the tensors are read
  for (const TensorEntry& entry : header.tensors) {
    Tree* leaf = tree->Find(entry.name);
    const uint64_t size = entry.end - entry.begin;
    if (leaf == nullptr || leaf->kind() != Tree::Kind::kTensor ||
        leaf->tensor().byte_size() != size) {
      return Status::Internal(source + ": tensor " + QuotedName(entry.name) +
                              " is not where the tree should hold it");
    }
    if (size == 0) continue;
    Status status = read_data(entry.begin, leaf->tensor().mutable_data(), size);
    if (!status.ok()) return status;
  }
  SafetensorsFile file;
  file.tree = std::move(*tree);
  file.metadata = std::move(header.metadata);
  return file;
}

Status ReadAt(int fd, uint64_t offset, void* out, uint64_t size, const std::string& path) {
  auto* cursor = static_cast<char*>(out);
  while (size > 0) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(size, uint64_t{1} << 30));
    const ssize_t got = ::pread(fd, cursor, chunk, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return Status::IOError("cannot read '" + path + "': " + ErrnoText(errno));
    }
    if (got == 0) {
      return Status::IOError("'" + path + "' ends at byte " + std::to_string(offset) +
                             ": did it shrink while being read?");
    }
    cursor += got;
    offset += static_cast<uint64_t>(got);
    size -= static_cast<uint64_t>(got);
  }
  return Status::OK();
}

// A regular file open for reading; closed on destruction.
class RegularFile {
 public:
  RegularFile(int fd, uint64_t size) : fd_(fd), size_(size) {}
  RegularFile(RegularFile&& other) noexcept
      : fd_(std::exchange(other.fd_, -1)), size_(other.size_) {}
  RegularFile& operator=(RegularFile&&) = delete;
  ~RegularFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  int fd() const { return fd_; }
  uint64_t size() const { return size_; }

 private:
  int fd_;
  uint64_t size_;
};

}  // namespace

std::string_view SafetensorsDTypeName(DType dtype) {
  const SafetensorsDType* entry = FindDType(dtype);
  return entry == nullptr ? "unknown" : entry->name;
}

Result<DType> DTypeFromSafetensorsName(std::string_view name) {
  for (const SafetensorsDType& entry : kSafetensorsDTypes) {
    if (entry.name == name) return entry.dtype;
  }
  return Status::InvalidArgument("unknown safetensors dtype " + QuotedName(name));
}

namespace {

// `path` open for reading, when it is a regular file: NotFound, IOError or
// InvalidArgument naming `source` otherwise.
Result<RegularFile> OpenRegularFile(const std::string& path, const std::string& source) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    const std::string message = "cannot open " + source + ": " + ErrnoText(error);
    return error == ENOENT ? Status::NotFound(message) : Status::IOError(message);
  }
  struct stat info {};
  Status refused;
  if (::fstat(fd, &info) != 0) {
    refused = Status::IOError("cannot stat " + source + ": " + ErrnoText(errno));
  } else if (!S_ISREG(info.st_mode)) {
    refused = Status::InvalidArgument(source + " is not a regular file");
  }
  if (refused.ok()) return RegularFile(fd, static_cast<uint64_t>(info.st_size));
  ::close(fd);
  return refused;
}

}  // namespace

Result<SafetensorsFile> ReadSafetensors(const std::string& path) {
  const std::string source = "safetensors file '" + path + "'";
  Result<RegularFile> file = OpenRegularFile(path, source);
  if (!file.ok()) return file.status();
  const int fd = file->fd();
  const uint64_t file_size = file->size();

  std::string first_bytes(std::min(file_size, kLengthFieldSize), '\0');
  Status status = ReadAt(fd, 0, first_bytes.data(), first_bytes.size(), path);
  if (!status.ok()) return status;
  Result<uint64_t> header_size = HeaderLength(first_bytes, file_size, source);
  if (!header_size.ok()) return header_size.status();
  std::string header(*header_size, '\0');
  status = ReadAt(fd, kLengthFieldSize, header.data(), header.size(), path);
  if (!status.ok()) return status;
  const uint64_t data_start = kLengthFieldSize + *header_size;
  Result<ValidatedHeader> validated = ValidateHeader(header, file_size - data_start, source);
  if (!validated.ok()) return validated.status();
  header = std::string();  // freed before the tensors are allocated
  return Materialize(
      std::move(*validated),
      [&](uint64_t offset, std::byte* out, uint64_t size) {
        return ReadAt(fd, data_start + offset, out, size, path);
      },
      source);
}

Result<MappedSafetensors> MapSafetensors(const std::string& path) {
  const std::string source = "safetensors file '" + path + "'";
  Result<RegularFile> file = OpenRegularFile(path, source);
  if (!file.ok()) return file.status();
  const int fd = file->fd();
  const uint64_t file_size = file->size();
  if (file_size < kLengthFieldSize) {
    return HeaderLength(std::string(file_size, '\0'), file_size, source).status();
  }
  void* address = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (address == MAP_FAILED) return Status::IOError("cannot map " + source + ": " + ErrnoText(errno));
  ::madvise(address, file_size, MADV_SEQUENTIAL);
  std::shared_ptr<const void> mapping(address,
                                      [file_size](const void* at) {
                                        ::munmap(const_cast<void*>(at), file_size);
                                      });
  const std::string_view bytes(static_cast<const char*>(address), file_size);
  Result<uint64_t> header_size = HeaderLength(bytes.substr(0, kLengthFieldSize), file_size, source);
  if (!header_size.ok()) return header_size.status();
  const uint64_t data_start = kLengthFieldSize + *header_size;
  Result<ValidatedHeader> validated =
      ValidateHeader(bytes.substr(kLengthFieldSize, *header_size), file_size - data_start, source);
  if (!validated.ok()) return validated.status();
  // The tree's leaves first view the start of the data, then each is pointed
  // at its own bytes (the nodes do not carry their paths; the entries do).
  const std::byte* data = reinterpret_cast<const std::byte*>(bytes.data()) + data_start;
  Result<Tree> tree = BuildTree(validated->nodes, [&](const ManifestNode& node) {
    return Tensor::ConstView(node.dtype, node.shape, data);
  });
  if (!tree.ok()) return tree.status().WithContext(source);
  for (const TensorEntry& entry : validated->tensors) {
    Tree* leaf = tree->Find(entry.name);
    if (leaf == nullptr || leaf->kind() != Tree::Kind::kTensor ||
        leaf->tensor().byte_size() != entry.end - entry.begin) {
      return Status::Internal(source + ": tensor " + QuotedName(entry.name) +
                              " is not where the tree should hold it");
    }
    Result<Tensor> view = Tensor::ConstView(entry.dtype, entry.shape, data + entry.begin);
    if (!view.ok()) return view.status().WithContext(source);
    *leaf = Tree::Leaf(std::move(*view));
  }
  MappedSafetensors mapped;
  mapped.tree = std::move(*tree);
  mapped.metadata = std::move(validated->metadata);
  mapped.mapping = std::move(mapping);
  return mapped;
}

Result<SafetensorsFile> ParseSafetensors(std::string_view bytes) {
  const std::string source = "safetensors input";
  Result<uint64_t> header_size =
      HeaderLength(bytes.substr(0, kLengthFieldSize), bytes.size(), source);
  if (!header_size.ok()) return header_size.status();
  const std::string_view data = bytes.substr(kLengthFieldSize + *header_size);
  Result<ValidatedHeader> validated =
      ValidateHeader(bytes.substr(kLengthFieldSize, *header_size), data.size(), source);
  if (!validated.ok()) return validated.status();
  return Materialize(
      std::move(*validated),
      [data](uint64_t offset, std::byte* out, uint64_t size) {
        std::memcpy(out, data.data() + offset, size);
        return Status::OK();
      },
      source);
}

}  // namespace ckptdb
