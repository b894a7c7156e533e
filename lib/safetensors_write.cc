// Writing safetensors files (layout in safetensors.h, the ckptdb.tree format
// in safetensors_internal.h).

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <filesystem>
#include <random>

#include "coding.h"
#include "file_util.h"
#include "manifest.h"
#include "safetensors.h"
#include "safetensors_internal.h"
#include "utf8.h"

namespace ckptdb {
namespace {

using namespace safetensors;

// The 16 hex digits of `bits`.
std::string HexBits(uint64_t bits) {
  std::string hex(16, '0');
  for (int i = 15; i >= 0; --i, bits >>= 4) hex[static_cast<size_t>(i)] = kHexDigits[bits & 0xf];
  return hex;
}

// A JSON string literal; `text` must be valid UTF-8.
std::string JsonString(std::string_view text) { return nlohmann::json(std::string(text)).dump(); }

// ---- Writing ----

// Appends ,"field":"text" or, when `text` is not UTF-8, ,"field_hex":"<hex>".
void AppendText(std::string_view field, std::string_view text, std::string* out) {
  *out += ",\"";
  *out += field;
  if (IsValidUtf8(text)) {
    *out += "\":";
    *out += JsonString(text);
  } else {
    *out += "_hex\":\"";
    *out += HexEncode(text);
    *out += '"';
  }
}

// The ckptdb.tree array (see the top of this file) for FlattenTree's nodes.
std::string EncodeTreeNodes(const std::vector<ManifestNode>& nodes) {
  std::string out = "[";
  for (const ManifestNode& node : nodes) {
    if (out.size() > 1) out += ',';
    out += "{\"kind\":\"";
    out += KindName(node.kind);
    out += '"';
    if (!node.key.empty()) AppendText("key", node.key, &out);
    switch (node.kind) {
      case Tree::Kind::kMap:
      case Tree::Kind::kList: out += ",\"children\":" + std::to_string(node.child_count); break;
      case Tree::Kind::kTensor: break;
      case Tree::Kind::kInt: out += ",\"value\":\"" + std::to_string(node.int_value) + "\""; break;
      case Tree::Kind::kFloat:
        out += ",\"value\":\"" + HexBits(std::bit_cast<uint64_t>(node.float_value)) + "\"";
        break;
      case Tree::Kind::kBool:
        out += node.int_value != 0 ? ",\"value\":true" : ",\"value\":false";
        break;
      case Tree::Kind::kString: AppendText("value", node.string_value, &out); break;
      case Tree::Kind::kShardedTensor: break;  // stored as kTensor
    }
    out += '}';
  }
  out += ']';
  return out;
}

// Appends the header entry of the tensor at `path`, whose bytes start at
// *offset, and advances *offset past them.
Status AppendTensorEntry(const std::string& path, const Tensor& tensor, uint64_t* offset,
                         std::string* header) {
  if (path.empty()) {
    return Status::InvalidArgument("a tensor at the root has no name: put it in a map");
  }
  if (path == kMetadataEntry) {
    return Status::InvalidArgument("a tensor at '__metadata__', a name safetensors reserves");
  }
  if (!IsValidUtf8(path)) {
    return Status::InvalidArgument("tensor path " + QuotedName(path) +
                                   " is not valid UTF-8, which safetensors names must be");
  }
  const SafetensorsDType* dtype = FindDType(tensor.dtype());
  if (dtype == nullptr) {
    return Status::InvalidArgument("tensor " + QuotedName(path) + " has an unknown dtype");
  }
  *header += ',';
  *header += JsonString(path);
  *header += ":{\"dtype\":\"";
  *header += dtype->name;
  *header += "\",\"shape\":[";
  for (size_t i = 0; i < tensor.shape().size(); ++i) {
    if (i > 0) *header += ',';
    *header += std::to_string(tensor.shape()[i]);
  }
  *header += "],\"data_offsets\":[" + std::to_string(*offset) + ",";
  *offset += tensor.byte_size();
  *header += std::to_string(*offset) + "]}";
  return Status::OK();
}

struct EncodedFile {
  std::string head;                    // length field, header JSON and padding
  std::vector<const Tensor*> tensors;  // their bytes follow in this order
};

Result<EncodedFile> EncodeFile(const Tree& tree,
                               const std::map<std::string, std::string>& metadata) {
  if (metadata.count(kTreeMetadataKey) != 0) {
    return Status::InvalidArgument(std::string("metadata key '") + kTreeMetadataKey +
                                   "' is reserved for the tree's structure");
  }
  for (const auto& [key, value] : metadata) {
    if (!IsValidUtf8(key) || !IsValidUtf8(value)) {
      return Status::InvalidArgument("metadata entry " + QuotedName(key) +
                                     " is not valid UTF-8, which safetensors metadata must be");
    }
  }
  std::map<std::string, std::string> all_metadata = metadata;
  {
    Result<std::vector<ManifestNode>> nodes = FlattenTree(tree);
    if (!nodes.ok()) return nodes.status();
    all_metadata.emplace(kTreeMetadataKey, EncodeTreeNodes(*nodes));
  }

  EncodedFile file;
  std::string header = "{\"__metadata__\":";
  try {
    header += nlohmann::json(all_metadata).dump();
  } catch (const nlohmann::json::exception& e) {
    return Status::Internal(std::string("cannot encode the metadata: ") + e.what());
  }
  uint64_t offset = 0;
  Status status;
  tree.ForEachLeaf([&](const std::string& path, const Tree& leaf) {
    if (!status.ok() || leaf.kind() != Tree::Kind::kTensor) return;
    status = AppendTensorEntry(path, leaf.tensor(), &offset, &header);
    file.tensors.push_back(&leaf.tensor());
  });
  if (!status.ok()) return status;
  header += '}';
  // Spaces up to a multiple of 8 bytes, as the reference writer pads, so that
  // the tensor bytes start aligned.
  header.append((8 - header.size() % 8) % 8, ' ');
  if (header.size() > kMaxSafetensorsHeaderSize) {
    return Status::InvalidArgument("header of " + std::to_string(header.size()) +
                                   " bytes; readers refuse more than " +
                                   std::to_string(kMaxSafetensorsHeaderSize));
  }
  file.head.reserve(kLengthFieldSize + header.size());
  AppendLittleEndian(&file.head, header.size(), kLengthFieldSize);
  file.head += header;
  return file;
}

Status WriteAll(int fd, const void* data, uint64_t size, const std::string& path) {
  const auto* cursor = static_cast<const char*>(data);
  while (size > 0) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(size, uint64_t{1} << 30));
    const ssize_t written = ::write(fd, cursor, chunk);
    if (written < 0) {
      if (errno == EINTR) continue;
      return Status::IOError("cannot write '" + path + "': " + ErrnoText(errno));
    }
    cursor += written;
    size -= static_cast<uint64_t>(written);
  }
  return Status::OK();
}


// What may be replaced by a written file: nothing, a regular file, or a
// symbolic link (the rename replaces the link itself, never what it names).
Status CheckWriteTarget(const std::string& path) {
  if (path.empty()) return Status::InvalidArgument("an empty file name; nothing was written");
  if (path.back() == '/') {
    return Status::InvalidArgument("'" + path + "' names a directory; nothing was written");
  }
  struct stat target {};
  if (::lstat(path.c_str(), &target) != 0) {
    if (errno == ENOENT) return Status::OK();
    return Status::IOError("cannot examine '" + path + "': " + ErrnoText(errno));
  }
  if (S_ISDIR(target.st_mode)) {
    return Status::InvalidArgument("'" + path + "' is a directory; nothing was written");
  }
  if (!S_ISREG(target.st_mode) && !S_ISLNK(target.st_mode)) {
    return Status::InvalidArgument("'" + path +
                                   "' is not a regular file (a device, fifo or socket); nothing "
                                   "was written");
  }
  return Status::OK();
}

// Creates a new file beside `path` under an unpredictable name, never
// following a link and never opening an existing file.
Result<std::pair<int, std::string>> CreateTemporaryBeside(const std::string& path,
                                                          unsigned permissions) {
  const std::filesystem::path target(path);
  std::random_device random;
  for (int attempt = 0; attempt < 16; ++attempt) {
    char suffix[32];
    std::snprintf(suffix, sizeof(suffix), ".%08x%08x.tmp", random(), random());
    const std::string temporary =
        (target.parent_path() / ("." + target.filename().string() + suffix)).string();
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                          permissions);
    if (fd >= 0) {
      // Exactly the permissions asked for, whatever the umask.
      if (::fchmod(fd, permissions) != 0) {
        const Status error =
            Status::IOError("cannot set the mode of '" + temporary + "': " + ErrnoText(errno));
        ::close(fd);
        ::unlink(temporary.c_str());
        return error;
      }
      return std::pair<int, std::string>(fd, temporary);
    }
    if (errno != EEXIST) {
      return Status::IOError("cannot create a temporary file beside '" + path +
                             "': " + ErrnoText(errno));
    }
  }
  return Status::IOError("cannot find a free temporary name beside '" + path + "'");
}

}  // namespace

Status WriteSafetensors(const std::string& path, const Tree& tree,
                        const std::map<std::string, std::string>& metadata, unsigned permissions) {
  Status status = CheckWriteTarget(path);
  if (!status.ok()) return status;
  Result<EncodedFile> file = EncodeFile(tree, metadata);
  if (!file.ok()) return file.status().WithContext("safetensors file '" + path + "'");
  Result<std::pair<int, std::string>> created = CreateTemporaryBeside(path, permissions & 07777);
  if (!created.ok()) return created.status();
  const auto [fd, temp] = *created;
  status = WriteAll(fd, file->head.data(), file->head.size(), temp);
  for (const Tensor* tensor : file->tensors) {
    if (!status.ok()) break;
    status = WriteAll(fd, tensor->data(), tensor->byte_size(), temp);
  }
  if (status.ok() && ::fsync(fd) != 0) {
    status = Status::IOError("cannot sync '" + temp + "': " + ErrnoText(errno));
  }
  if (::close(fd) != 0 && status.ok()) {
    status = Status::IOError("cannot close '" + temp + "': " + ErrnoText(errno));
  }
  // The target is checked again: it may have changed since.
  if (status.ok()) status = CheckWriteTarget(path);
  if (status.ok() && ::rename(temp.c_str(), path.c_str()) != 0) {
    status = Status::IOError("cannot rename '" + temp + "' to '" + path + "': " + ErrnoText(errno));
  }
  if (!status.ok()) {
    ::unlink(temp.c_str());
    return status;
  }
  return SyncParentDirectory(path);
}

}  // namespace ckptdb
