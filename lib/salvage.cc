// Salvage's sources, the encodings table files and logs share, and logs
// (table files: salvage_table.cc).
#include "salvage.h"

#include <fcntl.h>
#include <rocksdb/write_batch.h>
#include <unistd.h>
#include <xxhash.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "coding.h"
#include "salvage_internal.h"

namespace ckptdb {
namespace salvage {
namespace {

// ---- Sources ----

class FileSource : public SalvageSource {
 public:
  FileSource(int fd, uint64_t size, std::string name) : fd_(fd), size_(size), name_(std::move(name)) {}
  ~FileSource() override { ::close(fd_); }
  uint64_t size() const override { return size_; }
  const std::string& name() const override { return name_; }
  bool Read(uint64_t offset, uint64_t length, std::string* out) const override {
    if (offset > size_ || length > size_ - offset) return false;
    out->resize(length);
    for (uint64_t done = 0; done < length;) {
      const ssize_t got = ::pread(fd_, out->data() + done, length - done,
                                  static_cast<off_t>(offset + done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return false;
      done += static_cast<uint64_t>(got);
    }
    return true;
  }

 private:
  int fd_;
  uint64_t size_;
  std::string name_;
};

class MemorySource : public SalvageSource {
 public:
  MemorySource(std::string bytes, std::string name) : bytes_(std::move(bytes)), name_(std::move(name)) {}
  uint64_t size() const override { return bytes_.size(); }
  const std::string& name() const override { return name_; }
  bool Read(uint64_t offset, uint64_t length, std::string* out) const override {
    if (offset > bytes_.size() || length > bytes_.size() - offset) return false;
    out->assign(bytes_, offset, length);
    return true;
  }

 private:
  std::string bytes_;
  std::string name_;
};

// ---- Checksums (RocksDB's util/crc32c and table/format.cc) ----

std::array<uint32_t, 256> MakeCrc32cTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
    table[i] = crc;
  }
  return table;
}

}  // namespace

uint32_t Crc32cExtend(uint32_t crc, const char* data, size_t size) {
  static const std::array<uint32_t, 256> table = MakeCrc32cTable();
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) {
    crc = table[(crc ^ static_cast<unsigned char>(data[i])) & 0xff] ^ (crc >> 8);
  }
  return ~crc;
}

uint32_t BlockChecksum(uint8_t type, const char* data, size_t size, char last_byte) {
  switch (type) {
    case kCrc32c: return MaskCrc(Crc32cExtend(Crc32cExtend(0, data, size), &last_byte, 1));
    case kXxHash: {
      XXH32_state_t* state = XXH32_createState();
      XXH32_reset(state, 0);
      XXH32_update(state, data, size);
      XXH32_update(state, &last_byte, 1);
      const uint32_t value = XXH32_digest(state);
      XXH32_freeState(state);
      return value;
    }
    case kXxHash64: {
      XXH64_state_t* state = XXH64_createState();
      XXH64_reset(state, 0);
      XXH64_update(state, data, size);
      XXH64_update(state, &last_byte, 1);
      const auto value = static_cast<uint32_t>(XXH64_digest(state));
      XXH64_freeState(state);
      return value;
    }
    case kXxh3: {
      const auto value = static_cast<uint32_t>(XXH3_64bits(data, size));
      return value ^ static_cast<uint32_t>(static_cast<uint8_t>(last_byte)) * 0x6b9083d9u;
    }
    default: return 0;
  }
}

std::string Range(uint64_t begin, uint64_t end) {
  return "bytes " + std::to_string(begin) + "-" + std::to_string(end);
}

}  // namespace salvage

namespace {

using namespace salvage;

// ---- Write-ahead logs ----

constexpr uint64_t kLogBlockSize = 32768;
constexpr uint64_t kLogHeaderSize = 7;             // checksum, length, type
constexpr uint64_t kRecyclableLogHeaderSize = 11;  // and the log number
enum LogRecordType : uint8_t {
  kFullType = 1,
  kFirstType = 2,
  kMiddleType = 3,
  kLastType = 4,
  kRecyclableFullType = 5,
  kRecyclableLastType = 8,
  kSetCompressionType = 9,
};

// The records of one write batch, with their sequence numbers.
class BatchRecords : public rocksdb::WriteBatch::Handler {
 public:
  explicit BatchRecords(uint64_t sequence) : sequence_(sequence) {}
  std::vector<LoggedRecord> records;

  rocksdb::Status PutCF(uint32_t family, const rocksdb::Slice& key,
                        const rocksdb::Slice& value) override {
    records.push_back({family, {key.ToStringView(), sequence_++, false, value.ToStringView(), {}}});
    return rocksdb::Status::OK();
  }
  rocksdb::Status DeleteCF(uint32_t family, const rocksdb::Slice& key) override {
    records.push_back({family, {key.ToStringView(), sequence_++, true, {}, {}}});
    return rocksdb::Status::OK();
  }
  rocksdb::Status SingleDeleteCF(uint32_t family, const rocksdb::Slice& key) override {
    return DeleteCF(family, key);
  }
  rocksdb::Status DeleteRangeCF(uint32_t, const rocksdb::Slice&, const rocksdb::Slice&) override {
    ++sequence_;
    return rocksdb::Status::OK();
  }
  rocksdb::Status MergeCF(uint32_t, const rocksdb::Slice&, const rocksdb::Slice&) override {
    ++sequence_;
    return rocksdb::Status::OK();
  }
  rocksdb::Status PutBlobIndexCF(uint32_t, const rocksdb::Slice&, const rocksdb::Slice&) override {
    ++sequence_;
    return rocksdb::Status::OK();
  }
  void LogData(const rocksdb::Slice&) override {}

 private:
  uint64_t sequence_;
};

}  // namespace

Result<std::unique_ptr<SalvageSource>> SalvageSource::OpenFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return Status::IOError("cannot open " + path + ": " + std::strerror(errno));
  const off_t size = ::lseek(fd, 0, SEEK_END);
  if (size < 0) {
    ::close(fd);
    return Status::IOError("cannot read " + path + ": " + std::strerror(errno));
  }
  return std::unique_ptr<SalvageSource>(new FileSource(fd, static_cast<uint64_t>(size), path));
}

std::unique_ptr<SalvageSource> SalvageSource::FromBytes(std::string bytes, std::string name) {
  return std::make_unique<MemorySource>(std::move(bytes), std::move(name));
}

Result<LogSalvage> SalvageLog(const SalvageSource& source,
                              const std::function<Status(const std::vector<LoggedRecord>&)>& visit) {
  LogSalvage result;
  std::string batch;
  bool in_batch = false;  // fragments of a batch are being gathered
  uint64_t batch_begin = 0;
  std::string block;
  auto drop = [&](const std::string& why) {
    if (in_batch) result.damage.push_back("byte " + std::to_string(batch_begin) + ": " + why);
    batch.clear();
    in_batch = false;
  };
  auto deliver = [&](uint64_t batch_end) -> Status {
    in_batch = false;
    if (batch.size() < 12) {
      result.damage.push_back("byte " + std::to_string(batch_begin) + ": a write batch of " +
                              std::to_string(batch.size()) + " bytes");
      return Status::OK();
    }
    BatchRecords records(ReadLittleEndian(batch.data(), 8));
    const rocksdb::WriteBatch parsed_batch(batch);
    rocksdb::Status parsed = parsed_batch.Iterate(&records);
    if (!parsed.ok()) {
      result.damage.push_back("byte " + std::to_string(batch_begin) +
                              ": a write batch that does not parse: " + parsed.ToString());
    } else {
      ++result.batches;
      for (LoggedRecord& logged : records.records) {
        logged.record.extent_begin = batch_begin;
        logged.record.extent_end = batch_end;
      }
      // `records` views `parsed_batch`'s copy of the bytes: deliver now.
      Status status = visit(records.records);
      if (!status.ok()) return status;
    }
    batch.clear();
    return Status::OK();
  };
  // Scanning past damage since this byte (kNotScanning: not).
  constexpr uint64_t kNotScanning = UINT64_MAX;
  uint64_t damaged_from = kNotScanning;
  for (uint64_t block_start = 0; block_start < source.size(); block_start += kLogBlockSize) {
    const uint64_t block_size = std::min(kLogBlockSize, source.size() - block_start);
    if (!source.Read(block_start, block_size, &block)) {
      return Status::IOError("cannot read " + source.name());
    }
    for (uint64_t at = 0; at + kLogHeaderSize <= block_size;) {
      const char* header = block.data() + at;
      const uint64_t length = ReadLittleEndian(header + 4, 2);
      const auto type = static_cast<uint8_t>(header[6]);
      const bool recyclable = type >= kRecyclableFullType && type <= kRecyclableLastType;
      const uint64_t header_size = recyclable ? kRecyclableLogHeaderSize : kLogHeaderSize;
      const bool fits = type >= kFullType && type <= kSetCompressionType &&
                        at + header_size + length <= block_size;
      if (!fits || MaskCrc(Crc32cExtend(0, header + 6, header_size - 6 + length)) !=
                       static_cast<uint32_t>(ReadLittleEndian(header, 4))) {
        // No fragment starts here: damage, or the zeros after the last
        // write. The next fragment is wherever a header's checksum checks.
        if (damaged_from == kNotScanning) {
          damaged_from = block_start + at;
          drop("a batch with a damaged fragment");
        }
        ++at;
        continue;
      }
      if (damaged_from != kNotScanning) {
        result.damage.push_back(Range(damaged_from, block_start + at) + ": no fragment that checks");
        damaged_from = kNotScanning;
      }
      const std::string_view payload(header + header_size, length);
      const uint64_t end = block_start + at + header_size + length;
      const uint8_t kind = recyclable ? static_cast<uint8_t>(type - kRecyclableFullType + 1) : type;
      switch (kind) {
        case kFullType:
        case kFirstType:
          drop("a batch whose last fragment is missing");
          batch.assign(payload);
          in_batch = true;
          batch_begin = block_start + at;
          if (kind == kFullType) {
            Status status = deliver(end);
            if (!status.ok()) return status;
          }
          break;
        case kMiddleType:
        case kLastType:
          if (!in_batch) {
            result.damage.push_back("byte " + std::to_string(block_start + at) +
                                    ": a batch whose first fragment is missing");
            break;
          }
          batch.append(payload);
          if (batch.size() > kMaxSalvageBlockBytes) {
            drop("a batch larger than salvage reads");
          } else if (kind == kLastType) {
            Status status = deliver(end);
            if (!status.ok()) return status;
          }
          break;
        default:  // kSetCompressionType
          if (!payload.empty() && payload[0] != 0) {
            result.damage.push_back("the log is compressed, which salvage does not read");
            return result;
          }
          break;
      }
      at += header_size + length;
    }
  }
  if (damaged_from != kNotScanning) {
    // Zeros to the end are space never written (a block's tail, a
    // preallocated file); anything else there is damage.
    std::string tail;
    const bool zeros = source.Read(damaged_from, source.size() - damaged_from, &tail) &&
                       tail.find_first_not_of('\0') == std::string::npos;
    if (!zeros) result.damage.push_back(Range(damaged_from, source.size()) + ": no fragment that checks");
  }
  drop("the last batch is cut short (a write a crash interrupted)");
  return result;
}

}  // namespace ckptdb
