#include "multiprocess.h"

#include <algorithm>
#include <map>
#include <set>

#include "ckptdb/coordinator.h"
#include "coding.h"

namespace ckptdb {

Coordinator::~Coordinator() = default;

namespace {

Status StatusWithCode(Status::Code code, std::string_view message) {
  switch (code) {
    case Status::Code::kOk: return Status::OK();
    case Status::Code::kNotFound: return Status::NotFound(message);
    case Status::Code::kAlreadyExists: return Status::AlreadyExists(message);
    case Status::Code::kInvalidArgument: return Status::InvalidArgument(message);
    case Status::Code::kCorruption: return Status::Corruption(message);
    case Status::Code::kIOError: return Status::IOError(message);
    case Status::Code::kNotSupported: return Status::NotSupported(message);
    case Status::Code::kFailedPrecondition: return Status::FailedPrecondition(message);
    case Status::Code::kBusy: return Status::Busy(message);
    case Status::Code::kInternal: return Status::Internal(message);
  }
  return Status::Internal(message);
}

void AppendStatus(std::string* out, const Status& status) {
  out->push_back(static_cast<char>(status.code()));
  AppendLittleEndian(out, status.message().size(), 4);
  out->append(status.message());
}

// Reads what the encoders append, each length checked against what is left.
class MessageReader {
 public:
  explicit MessageReader(std::string_view bytes) : rest_(bytes) {}
  bool ok() const { return ok_; }
  bool done() const { return ok_ && rest_.empty(); }
  uint64_t Number(int bytes) {
    std::string_view taken = Take(static_cast<size_t>(bytes));
    return ok_ ? ReadLittleEndian(taken.data(), bytes) : 0;
  }
  std::string_view Take(size_t size) {
    if (!ok_ || size > rest_.size()) {
      ok_ = false;
      return {};
    }
    std::string_view taken = rest_.substr(0, size);
    rest_.remove_prefix(size);
    return taken;
  }
  Status ReadStatus() {
    const uint64_t code = Number(1);
    const uint64_t size = Number(4);
    std::string_view message = Take(size);
    if (code > static_cast<uint64_t>(Status::Code::kInternal)) ok_ = false;
    if (!ok_) return Status::OK();
    if (code == 0) return Status::OK();
    return StatusWithCode(static_cast<Status::Code>(code), message);
  }

 private:
  std::string_view rest_;
  bool ok_ = true;
};

constexpr size_t kIndexEntryBytes = 16 + 4 + 4;

}  // namespace

std::string EncodeVerdict(const Status& status, uint64_t value,
                          const std::vector<int64_t>& steps) {
  std::string out;
  AppendStatus(&out, status);
  AppendLittleEndian(&out, value, 8);
  AppendLittleEndian(&out, steps.size(), 8);
  for (int64_t step : steps) AppendLittleEndian(&out, static_cast<uint64_t>(step), 8);
  return out;
}

Result<uint64_t> DecodeVerdict(std::string_view bytes, Status* status,
                               std::vector<int64_t>* steps) {
  MessageReader reader(bytes);
  *status = reader.ReadStatus();
  const uint64_t value = reader.Number(8);
  const uint64_t count = reader.Number(8);
  if (!reader.ok() || count > bytes.size() / 8) {
    return Status::Corruption("malformed message from the primary process");
  }
  std::vector<int64_t> listed;
  listed.reserve(count);
  for (uint64_t i = 0; i < count; ++i) listed.push_back(static_cast<int64_t>(reader.Number(8)));
  if (!reader.done()) return Status::Corruption("malformed message from the primary process");
  if (steps != nullptr) *steps = std::move(listed);
  return value;
}

std::string EncodePart(const Status& status, const Manifest& manifest,
                       const std::vector<IndexEntry>& new_chunks) {
  std::string out;
  AppendStatus(&out, status);
  if (!status.ok()) return out;
  const std::string encoded = EncodeManifest(manifest);
  AppendLittleEndian(&out, encoded.size(), 8);
  out += encoded;
  AppendLittleEndian(&out, new_chunks.size(), 8);
  for (const IndexEntry& entry : new_chunks) {
    out += entry.digest.ToBytes();
    AppendLittleEndian(&out, entry.location.raw_size, 4);
    AppendLittleEndian(&out, entry.location.stored_size, 4);
  }
  return out;
}

Result<ProcessPart> DecodePart(std::string_view bytes, int process, uint64_t generation,
                               Status* status) {
  const std::string who = "the part of the save sent by process " + std::to_string(process);
  MessageReader reader(bytes);
  *status = reader.ReadStatus();
  ProcessPart part;
  if (reader.ok() && !status->ok()) {
    if (!reader.done()) return Status::Corruption(who + " is malformed");
    return part;
  }
  std::string_view manifest = reader.Take(reader.Number(8));
  const uint64_t count = reader.Number(8);
  if (!reader.ok()) return Status::Corruption(who + " is malformed");
  Result<Manifest> decoded = DecodeManifest(manifest, ManifestScope::kProcess);
  if (!decoded.ok()) return decoded.status().WithContext(who);
  part.manifest = std::move(*decoded);
  if (count > bytes.size() / kIndexEntryBytes) return Status::Corruption(who + " is malformed");
  part.new_chunks.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    std::string_view digest = reader.Take(16);
    IndexEntry entry;
    entry.location.generation = generation;
    entry.location.raw_size = static_cast<uint32_t>(reader.Number(4));
    entry.location.stored_size = static_cast<uint32_t>(reader.Number(4));
    if (!reader.ok()) return Status::Corruption(who + " is malformed");
    entry.digest = ChunkDigest::FromBytes(digest.data());
    part.new_chunks.push_back(entry);
  }
  if (!reader.done()) return Status::Corruption(who + " is malformed");
  return part;
}

namespace {

// Empty when `node` has the kind, dtype and shape of the primary's
// `expected` (the same path); else what differs.
std::string NodeDifference(const ManifestNode& expected, const ManifestNode& node) {
  if (node.kind != expected.kind) {
    return "is a " + std::string(KindName(node.kind)) + " there, a " +
           std::string(KindName(expected.kind)) + " on the primary";
  }
  if (node.kind == Tree::Kind::kTensor &&
      (node.dtype != expected.dtype || node.shape != expected.shape)) {
    return "is " + std::string(DTypeName(node.dtype)) + " " + ShapeString(node.shape) +
           " there, " + std::string(DTypeName(expected.dtype)) + " " +
           ShapeString(expected.shape) + " on the primary";
  }
  return {};
}

// Empty when process `process` saved the primary's tree (`expected`, from
// process `primary`); else the first place where they differ, in pre-order,
// blaming the side that lacks a node the other has.
std::string TreeDifference(const std::vector<ManifestNode>& expected, size_t primary,
                           const std::vector<ManifestNode>& nodes, size_t process) {
  const std::string theirs = "process " + std::to_string(process);
  const std::string primarys = "the primary (process " + std::to_string(primary) + ")";
  auto has_path = [](const std::vector<ManifestNode>& in, const std::string& path) {
    return std::any_of(in.begin(), in.end(),
                       [&](const ManifestNode& node) { return node.path == path; });
  };
  for (size_t n = 0; n < std::max(expected.size(), nodes.size()); ++n) {
    if (n >= nodes.size() || (n < expected.size() && expected[n].path != nodes[n].path &&
                              !has_path(nodes, expected[n].path))) {
      return theirs + " lacks '" + expected[n].path + "', which " + primarys + " saved";
    }
    if (n >= expected.size() || expected[n].path != nodes[n].path) {
      return primarys + " lacks '" + nodes[n].path + "', which " + theirs + " saved";
    }
    std::string difference = NodeDifference(expected[n], nodes[n]);
    if (!difference.empty()) return "'" + nodes[n].path + "' of " + theirs + " " + difference;
  }
  return {};
}

}  // namespace

Result<Manifest> MergeParts(const std::vector<ProcessPart>& parts, size_t primary,
                            std::vector<IndexEntry>* new_chunks) {
  Manifest merged = parts[primary].manifest;
  for (size_t p = 0; p < parts.size(); ++p) {
    std::string difference = TreeDifference(merged.nodes, primary, parts[p].manifest.nodes, p);
    if (!difference.empty()) {
      return Status::InvalidArgument(difference + ": every process must save the same tree");
    }
  }
  for (size_t n = 0; n < merged.nodes.size(); ++n) {
    ManifestNode& node = merged.nodes[n];
    if (node.kind != Tree::Kind::kTensor) continue;
    std::vector<BoxChunks> boxes;
    for (const ProcessPart& part : parts) {
      const ManifestNode& mine = part.manifest.nodes[n];
      if (!mine.boxed) {
        return Status::InvalidArgument("tensor '" + node.path +
                                       "' came unboxed from a process of a multi-process save");
      }
      for (BoxChunks& box : BoxesOf(mine)) boxes.push_back(std::move(box));
    }
    Status status = SetBoxes(&node, std::move(boxes));
    if (!status.ok()) {
      // Only replica 0 of each part is written (JAX's rule).
      return status.WithContext("every element needs a process that holds it as replica 0");
    }
  }
  std::set<ChunkDigest> seen;
  for (const ProcessPart& part : parts) {
    for (const IndexEntry& entry : part.new_chunks) {
      if (seen.insert(entry.digest).second) new_chunks->push_back(entry);
    }
  }
  return merged;
}

}  // namespace ckptdb
