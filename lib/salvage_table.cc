// Salvage of RocksDB's block-based table files (doc/format.md §12).
#include <snappy.h>
#include <zstd.h>

#include <algorithm>
#include <optional>

#include "coding.h"
#include "salvage.h"
#include "salvage_internal.h"

namespace ckptdb {
namespace {

using namespace salvage;

// ---- Table files (doc/format.md §12) ----

constexpr uint64_t kTableMagic = 0x88e241b785f4cff7ull;
constexpr uint64_t kFooterSize = 1 + 2 * 20 + 4 + 8;  // checksum type, 2 handles, version, magic
constexpr uint64_t kBlockTrailerSize = 5;              // compression type, checksum
constexpr uint8_t kNoCompression = 0;
constexpr uint8_t kSnappyCompression = 1;
constexpr uint8_t kZstdCompression = 7;
constexpr uint8_t kTypeDeletion = 0;
constexpr uint8_t kTypeValue = 1;
constexpr uint8_t kTypeSingleDeletion = 7;
constexpr uint8_t kLastKnownValueType = 0x17;
constexpr uint64_t kMaxBlockEntriesBytes = 8 << 10;  // before a block's last entry (2x block_size)
constexpr char kPropertiesBlockName[] = "rocksdb.properties";
constexpr char kFamilyNameProperty[] = "rocksdb.column.family.name";
constexpr char kFamilyIdProperty[] = "rocksdb.column.family.id";

struct BlockHandle {
  uint64_t offset = 0;
  uint64_t size = 0;
};

bool DecodeHandle(const char** p, const char* end, BlockHandle* handle) {
  return GetVarint64(p, end, &handle->offset) && GetVarint64(p, end, &handle->size);
}

// Uncompresses a block's bytes of compression `type` into `contents`.
Status Uncompress(uint8_t type, std::string_view data, std::string* contents) {
  switch (type) {
    case kNoCompression: contents->assign(data); return Status::OK();
    case kSnappyCompression: {
      size_t length = 0;
      if (!snappy::GetUncompressedLength(data.data(), data.size(), &length) ||
          length > kMaxSalvageBlockBytes) {
        return Status::Corruption("malformed snappy block");
      }
      contents->resize(length);
      if (!snappy::RawUncompress(data.data(), data.size(), contents->data())) {
        return Status::Corruption("malformed snappy block");
      }
      return Status::OK();
    }
    case kZstdCompression: {
      // Block format 2 and later: the uncompressed size as a varint first.
      const char* p = data.data();
      uint32_t length = 0;
      if (!GetVarint32(&p, data.data() + data.size(), &length) || length > kMaxSalvageBlockBytes) {
        return Status::Corruption("malformed zstd block");
      }
      contents->resize(length);
      const size_t done = ZSTD_decompress(contents->data(), length, p,
                                          static_cast<size_t>(data.data() + data.size() - p));
      if (ZSTD_isError(done) || done != length) return Status::Corruption("malformed zstd block");
      return Status::OK();
    }
    default:
      return Status::NotSupported("block compression type " + std::to_string(type) +
                                  " (salvage reads none, snappy and zstd)");
  }
}

// Checks a block's trailer (`bytes` = data, type byte, checksum) and returns
// its contents uncompressed.
Status CheckedContents(std::string_view bytes, uint8_t checksum_type, std::string* contents) {
  const size_t size = bytes.size() - kBlockTrailerSize;
  const char type = bytes[size];
  const auto stored = static_cast<uint32_t>(ReadLittleEndian(bytes.data() + size + 1, 4));
  if (checksum_type != kNoChecksum &&
      BlockChecksum(checksum_type, bytes.data(), size, type) != stored) {
    return Status::Corruption("checksum mismatch");
  }
  return Uncompress(static_cast<uint8_t>(type), bytes.substr(0, size), contents);
}

// Calls `entry(key, value)` for each entry of a block's uncompressed
// contents (prefix-compressed keys, the restart array at the end); false when
// the contents are malformed or `entry` returns false.
template <typename EntryFn>
bool ParseBlock(std::string_view contents, EntryFn&& entry) {
  if (contents.size() < 4) return false;
  const uint64_t restarts = ReadLittleEndian(contents.data() + contents.size() - 4, 4);
  // The high bit marks a data block hash index, which ckptdb never enables.
  if (restarts == 0 || restarts >= (uint64_t{1} << 31) || 4 * (restarts + 1) > contents.size()) {
    return false;
  }
  const char* p = contents.data();
  const char* end = contents.data() + contents.size() - 4 * (restarts + 1);
  std::string key;
  while (p < end) {
    uint32_t shared = 0;
    uint32_t non_shared = 0;
    uint32_t value_size = 0;
    if (!GetVarint32(&p, end, &shared) || !GetVarint32(&p, end, &non_shared) ||
        !GetVarint32(&p, end, &value_size) || shared > key.size() ||
        static_cast<uint64_t>(end - p) < uint64_t{non_shared} + value_size) {
      return false;
    }
    key.resize(shared);
    key.append(p, non_shared);
    p += non_shared;
    if (!entry(std::string_view(key), std::string_view(p, value_size))) return false;
    p += value_size;
  }
  return p == end;
}

// A data block entry's key is an internal key: the user key, then 8 bytes
// of (sequence << 8 | value type), little-endian.
struct InternalKey {
  std::string_view user_key;
  uint64_t sequence = 0;
  uint8_t type = 0;
};

bool ParseInternalKey(std::string_view key, InternalKey* parsed) {
  if (key.size() < 8) return false;
  const uint64_t trailer = ReadLittleEndian(key.data() + key.size() - 8, 8);
  parsed->user_key = key.substr(0, key.size() - 8);
  parsed->sequence = trailer >> 8;
  parsed->type = static_cast<uint8_t>(trailer & 0xff);
  return parsed->type <= kLastKnownValueType;
}

class TableReader {
 public:
  TableReader(const SalvageSource& source, const std::function<Status(const SalvagedRecord&)>& visit)
      : source_(source), visit_(visit) {}

  Result<TableSalvage> Run() {
    std::vector<BlockHandle> data_blocks;
    std::string problem = ReadStructure(&data_blocks);
    if (problem.empty()) {
      result_.intact = true;
      for (const BlockHandle& handle : data_blocks) {
        Status status = ReadIndexedBlock(handle);
        if (!status.ok()) return status;
      }
    } else {
      result_.damage.push_back(problem + ": the file is walked block by block");
      Status status = Walk();
      if (!status.ok()) return status;
    }
    return std::move(result_);
  }

 private:
  // Reads `handle`'s block with its trailer into `contents`, checked.
  Status ReadBlock(const BlockHandle& handle, std::string* contents) {
    if (handle.size > kMaxSalvageBlockBytes || handle.offset > source_.size() ||
        handle.size + kBlockTrailerSize > source_.size() - handle.offset) {
      return Status::Corruption("a block handle points outside the file");
    }
    if (!source_.Read(handle.offset, handle.size + kBlockTrailerSize, &buffer_)) {
      return Status::IOError("cannot read " + Range(handle.offset, handle.offset + handle.size));
    }
    return CheckedContents(buffer_, checksum_type_, contents);
  }

  // Footer, properties and index: the data blocks' handles, or what is wrong.
  std::string ReadStructure(std::vector<BlockHandle>* data_blocks) {
    const uint64_t size = source_.size();
    std::string footer;
    if (size < kFooterSize || !source_.Read(size - kFooterSize, kFooterSize, &footer)) {
      return "no footer";
    }
    const uint64_t magic = ReadLittleEndian(footer.data() + kFooterSize - 8, 8);
    const uint64_t version = ReadLittleEndian(footer.data() + kFooterSize - 12, 4);
    if (magic != kTableMagic || version < 1 || version > 5) return "damaged footer";
    checksum_type_ = static_cast<uint8_t>(footer[0]);
    if (checksum_type_ > kXxh3) return "damaged footer";
    const char* p = footer.data() + 1;
    const char* end = footer.data() + kFooterSize - 12;
    BlockHandle metaindex;
    BlockHandle index;
    if (!DecodeHandle(&p, end, &metaindex) || !DecodeHandle(&p, end, &index)) {
      return "damaged footer";
    }
    std::string contents;
    Status read = ReadBlock(metaindex, &contents);
    if (!read.ok()) return "metaindex block: " + read.ToString();
    BlockHandle properties;
    bool found = false;
    const bool parsed = ParseBlock(contents, [&](std::string_view key, std::string_view value) {
      if (key != kPropertiesBlockName) return true;
      const char* at = value.data();
      found = DecodeHandle(&at, value.data() + value.size(), &properties);
      return found;
    });
    if (!parsed || !found) return "damaged metaindex block";
    read = ReadBlock(properties, &contents);
    if (!read.ok()) return "properties block: " + read.ToString();
    if (!ReadProperties(contents)) return "damaged properties block";
    read = ReadBlock(index, &contents);
    if (!read.ok()) return "index block: " + read.ToString();
    // Format 4 and later store an index value without its length: a block
    // handle, or for an entry sharing a key prefix, the size difference from
    // the block before (which it directly follows).
    const bool delta_values = version >= 4;
    const char* q = contents.data();
    if (contents.size() < 4) return "damaged index block";
    const uint64_t restarts = ReadLittleEndian(contents.data() + contents.size() - 4, 4);
    if (restarts == 0 || 4 * (restarts + 1) > contents.size()) return "damaged index block";
    const char* limit = contents.data() + contents.size() - 4 * (restarts + 1);
    uint64_t next_offset = 0;
    while (q < limit) {
      uint32_t shared = 0;
      uint32_t non_shared = 0;
      uint32_t value_size = 0;
      if (!GetVarint32(&q, limit, &shared) || !GetVarint32(&q, limit, &non_shared) ||
          (!delta_values && !GetVarint32(&q, limit, &value_size)) ||
          static_cast<uint64_t>(limit - q) < non_shared) {
        return "damaged index block";
      }
      q += non_shared;
      BlockHandle handle;
      if (delta_values && shared != 0 && !data_blocks->empty()) {
        uint64_t zigzag = 0;
        if (!GetVarint64(&q, limit, &zigzag)) return "damaged index block";
        const int64_t delta = static_cast<int64_t>(zigzag >> 1) ^ -static_cast<int64_t>(zigzag & 1);
        handle.offset = next_offset;
        handle.size = data_blocks->back().size + static_cast<uint64_t>(delta);
      } else {
        const char* value_end = delta_values ? limit : q + value_size;
        if (value_end > limit || !DecodeHandle(&q, value_end, &handle)) return "damaged index block";
        if (!delta_values) q = value_end;
      }
      if (handle.offset < next_offset || handle.size > kMaxSalvageBlockBytes ||
          handle.offset > size || handle.size + kBlockTrailerSize > size - handle.offset) {
        return "damaged index block";
      }
      next_offset = handle.offset + handle.size + kBlockTrailerSize;
      data_blocks->push_back(handle);
    }
    return "";
  }

  // The family a properties block names; false when it is malformed.
  bool ReadProperties(std::string_view contents) {
    return ParseBlock(contents, [&](std::string_view key, std::string_view value) {
      if (key == kFamilyNameProperty) result_.family = std::string(value);
      if (key == kFamilyIdProperty) {
        const char* p = value.data();
        uint64_t id = 0;
        if (GetVarint64(&p, value.data() + value.size(), &id) && id <= UINT32_MAX) {
          result_.family_id = static_cast<uint32_t>(id);
        }
      }
      return true;
    });
  }

  // Delivers the records of a data block's contents; false (nothing
  // delivered) when they are not a data block's.
  Result<bool> DeliverDataBlock(std::string_view contents, uint64_t begin, uint64_t end) {
    bool data = true;
    const bool parsed = ParseBlock(contents, [&](std::string_view key, std::string_view) {
      InternalKey parsed_key;
      data = ParseInternalKey(key, &parsed_key);
      return data;
    });
    if (!parsed || !data) return false;
    Status status;
    ParseBlock(contents, [&](std::string_view key, std::string_view value) {
      InternalKey parsed_key;
      ParseInternalKey(key, &parsed_key);
      if (parsed_key.type != kTypeValue && parsed_key.type != kTypeDeletion &&
          parsed_key.type != kTypeSingleDeletion) {
        return true;  // range deletions, merges, blob references: ckptdb writes none here
      }
      ++result_.records;
      status = visit_({parsed_key.user_key, parsed_key.sequence, parsed_key.type != kTypeValue,
                       parsed_key.type == kTypeValue ? value : std::string_view(),
                       result_.family, begin, end});
      return status.ok();
    });
    if (!status.ok()) return status;
    ++result_.blocks;
    return true;
  }

  Status ReadIndexedBlock(const BlockHandle& handle) {
    std::string contents;
    Status read = ReadBlock(handle, &contents);
    const uint64_t end = handle.offset + handle.size + kBlockTrailerSize;
    Result<bool> delivered = read.ok() ? DeliverDataBlock(contents, handle.offset, end) : Result<bool>(false);
    if (!delivered.ok()) return delivered.status();
    if (*delivered) return Status::OK();
    result_.intact = false;
    result_.damage.push_back(Range(handle.offset, end) + ": " +
                             (read.ok() ? "not a data block" : read.ToString()));
    return Status::OK();
  }

  // ---- Walking a file whose footer or index is damaged ----

  // A view of `length` bytes at `offset`, from a window read ahead of it.
  bool View(uint64_t offset, uint64_t length, std::string_view* out) {
    if (offset < window_start_ || offset + length > window_start_ + window_.size()) {
      const uint64_t want = std::max<uint64_t>(length, uint64_t{1} << 20);
      if (offset > source_.size()) return false;
      const uint64_t available = std::min(want, source_.size() - offset);
      if (available < length || !source_.Read(offset, available, &window_)) return false;
      window_start_ = offset;
    }
    *out = std::string_view(window_).substr(offset - window_start_, length);
    return true;
  }

  uint32_t U32At(uint64_t offset, bool* ok) {
    std::string_view bytes;
    *ok = View(offset, 4, &bytes);
    return *ok ? static_cast<uint32_t>(ReadLittleEndian(bytes.data(), 4)) : 0;
  }

  // Whether `size` bytes at `start` then a trailer of compression `type` form
  // a block whose checksum checks (trying each checksum type, the one that
  // checked last first); if so, its contents go into `contents`.
  bool ChecksOut(uint64_t start, uint64_t size, uint8_t type, std::string* contents) {
    std::string_view bytes;
    if (size > kMaxSalvageBlockBytes || !View(start, size + kBlockTrailerSize, &bytes) ||
        static_cast<uint8_t>(bytes[size]) != type) {
      return false;
    }
    const auto stored = static_cast<uint32_t>(ReadLittleEndian(bytes.data() + size + 1, 4));
    for (uint8_t candidate : {walk_checksum_, uint8_t{kXxh3}, uint8_t{kCrc32c}, uint8_t{kXxHash64},
                              uint8_t{kXxHash}}) {
      if (BlockChecksum(candidate, bytes.data(), size, bytes[size]) == stored) {
        walk_checksum_ = candidate;
        return Uncompress(type, bytes.substr(0, size), contents).ok();
      }
    }
    return false;
  }

  // An uncompressed block starting at `start`: its size (without trailer).
  // With `data_only`, only blocks whose keys are internal keys are looked
  // for (scanning past damage); otherwise any block (properties, index).
  std::optional<uint64_t> UncompressedBlockAt(uint64_t start, bool data_only, std::string* contents) {
    uint64_t p = start;
    std::vector<uint32_t> restart_candidates;  // offsets of entries sharing nothing
    std::string key;
    for (uint64_t entries = 0;; ++entries) {
      if (entries > 0) {
        // The restart array: offsets of some of the entries sharing no key
        // prefix, increasing, the first 0; then their count.
        bool ok = false;
        if (U32At(p, &ok) == 0 && ok) {
          size_t next_candidate = 1;
          for (uint32_t i = 1; i <= restart_candidates.size(); ++i) {
            const uint32_t value = U32At(p + 4 * uint64_t{i}, &ok);
            if (!ok) break;
            const uint64_t size = p + 4 * (uint64_t{i} + 1) - start;
            if (value == i && ChecksOut(start, size, kNoCompression, contents)) return size;
            while (next_candidate < restart_candidates.size() &&
                   restart_candidates[next_candidate] < value) {
              ++next_candidate;
            }
            if (next_candidate == restart_candidates.size() ||
                restart_candidates[next_candidate] != value) {
              break;
            }
            ++next_candidate;
          }
        }
      }
      // RocksDB cuts a block once its entries pass the block size (4 KiB):
      // entries beyond this many bytes mean this is no block start.
      if (p - start > kMaxBlockEntriesBytes) return std::nullopt;
      std::string_view header;
      const uint64_t header_bytes = std::min<uint64_t>(15, source_.size() - std::min(p, source_.size()));
      if (header_bytes < 3 || !View(p, header_bytes, &header)) return std::nullopt;
      const char* q = header.data();
      const char* end = header.data() + header.size();
      uint32_t shared = 0;
      uint32_t non_shared = 0;
      uint32_t value_size = 0;
      if (!GetVarint32(&q, end, &shared) || !GetVarint32(&q, end, &non_shared) ||
          !GetVarint32(&q, end, &value_size) || shared > key.size() ||
          (entries == 0 && shared != 0)) {
        return std::nullopt;
      }
      const uint64_t entry_end = p + static_cast<uint64_t>(q - header.data()) + non_shared + value_size;
      if (entry_end - start > kMaxSalvageBlockBytes || entry_end > source_.size()) return std::nullopt;
      std::string_view delta;
      if (!View(p + static_cast<uint64_t>(q - header.data()), non_shared, &delta)) return std::nullopt;
      key.resize(shared);
      key.append(delta);
      InternalKey parsed;
      if (data_only && !ParseInternalKey(key, &parsed)) return std::nullopt;
      if (shared == 0) restart_candidates.push_back(static_cast<uint32_t>(p - start));
      p = entry_end;
    }
  }

  // A snappy-compressed block starting at `start`: its size. The compressed
  // stream is walked (without decompressing) to where it ends.
  std::optional<uint64_t> SnappyBlockAt(uint64_t start, std::string* contents) {
    std::string_view bytes;
    const uint64_t head = std::min<uint64_t>(5, source_.size() - std::min(start, source_.size()));
    if (head == 0 || !View(start, head, &bytes)) return std::nullopt;
    const char* q = bytes.data();
    uint32_t length = 0;
    if (!GetVarint32(&q, bytes.data() + bytes.size(), &length) || length > kMaxSalvageBlockBytes) {
      return std::nullopt;
    }
    uint64_t p = start + static_cast<uint64_t>(q - bytes.data());
    for (uint64_t produced = 0; produced < length;) {
      std::string_view tag_bytes;
      if (!View(p, 1, &tag_bytes)) return std::nullopt;
      const auto tag = static_cast<unsigned char>(tag_bytes[0]);
      uint64_t extra = 0;
      uint64_t copied = 0;
      uint64_t literal = 0;
      switch (tag & 3) {
        case 0:
          if ((tag >> 2) < 60) {
            literal = (tag >> 2) + 1;
          } else {
            extra = (tag >> 2) - 59;
            std::string_view size_bytes;
            if (!View(p + 1, extra, &size_bytes)) return std::nullopt;
            literal = ReadLittleEndian(size_bytes.data(), static_cast<int>(extra)) + 1;
          }
          copied = literal;
          break;
        case 1: extra = 1; copied = ((tag >> 2) & 7) + 4; break;
        case 2: extra = 2; copied = (tag >> 2) + 1; break;
        default: extra = 4; copied = (tag >> 2) + 1; break;
      }
      produced += copied;
      p += 1 + extra + literal;
      if (produced > length || p - start > kMaxSalvageBlockBytes) return std::nullopt;
    }
    if (!ChecksOut(start, p - start, kSnappyCompression, contents)) return std::nullopt;
    if (!ParseBlock(*contents, [](std::string_view, std::string_view) { return true; })) {
      return std::nullopt;
    }
    return p - start;
  }

  // Walks the file from its start: each block where the last one ended
  // (uncompressed or snappy); after a damaged one, the next offset where an
  // uncompressed data block checks.
  Status Walk() {
    result_.intact = false;
    std::string contents;
    for (uint64_t at = 0; at + kBlockTrailerSize < source_.size();) {
      std::optional<uint64_t> size = UncompressedBlockAt(at, /*data_only=*/false, &contents);
      if (!size.has_value()) size = SnappyBlockAt(at, &contents);
      if (!size.has_value()) {
        const uint64_t damaged = at;
        do {
          ++at;
        } while (at + kBlockTrailerSize < source_.size() &&
                 !(size = UncompressedBlockAt(at, /*data_only=*/true, &contents)).has_value());
        if (!size.has_value()) {
          // The index and footer end every file; after damage, more may be lost.
          result_.damage.push_back(Range(damaged, source_.size()) +
                                   ": no data block that checks (index and footer, or damage)");
          break;
        }
        result_.damage.push_back(Range(damaged, at) + ": no block that checks");
      }
      Result<bool> delivered = DeliverDataBlock(contents, at, at + *size + kBlockTrailerSize);
      if (!delivered.ok()) return delivered.status();
      if (!*delivered) ReadProperties(contents);
      at += *size + kBlockTrailerSize;
    }
    return Status::OK();
  }

  const SalvageSource& source_;
  const std::function<Status(const SalvagedRecord&)>& visit_;
  TableSalvage result_;
  uint8_t checksum_type_ = kXxh3;
  uint8_t walk_checksum_ = kXxh3;
  std::string buffer_;
  std::string window_;
  uint64_t window_start_ = 0;
};

}  // namespace

Result<TableSalvage> SalvageTable(const SalvageSource& source,
                                  const std::function<Status(const SalvagedRecord&)>& visit) {
  return TableReader(source, visit).Run();
}

}  // namespace ckptdb
