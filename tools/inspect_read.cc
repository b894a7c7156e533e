// The commands that look: list, show, stats, diff.

#include <filesystem>
#include <map>

#include "garbage_collector.h"
#include "inspect_internal.h"

namespace ckptdb::inspect {

Status List(const Context& context, const std::string& workdir) {
  Result<Inspector> inspector = Inspector::Open(workdir);
  if (!inspector.ok()) return inspector.status();
  Result<std::vector<int64_t>> steps = inspector->Steps();
  if (!steps.ok()) return steps.status();
  Json json_steps = Json::array();
  Table table({"STEP", "COMMITTED (UTC)", "LOGICAL", "STORED", "TENSORS", "METRICS"});
  for (int64_t step : *steps) {
    Result<Manifest> manifest = inspector->ReadManifest(step);
    if (manifest.status().IsNotFound()) continue;  // deleted by the writer meanwhile
    if (IsUnreadable(manifest.status())) {
      json_steps.push_back({{"step", step}, {"error", manifest.status().ToString()}});
      table.Add({std::to_string(step), "unreadable: " + manifest.status().ToString()});
      continue;
    }
    if (!manifest.ok()) return manifest.status();
    uint64_t stored = 0;
    uint64_t tensors = 0;
    for (const ManifestNode& node : manifest->nodes) {
      stored += StoredBytes(node);
      tensors += node.kind == Tree::Kind::kTensor;
    }
    std::string metrics_text;
    for (const auto& [name, value] : manifest->metrics) {
      char number[32];
      std::snprintf(number, sizeof(number), "%.6g", value);
      metrics_text += (metrics_text.empty() ? "" : " ") + name + "=" + number;
    }
    const Json metrics = JsonObject(manifest->metrics);
    const uint64_t logical = LogicalBytes(*manifest);
    json_steps.push_back({{"step", step},
                          {"commit_time", FormatTime(manifest->commit_time_ns)},
                          {"commit_time_ns", manifest->commit_time_ns},
                          {"logical_bytes", logical},
                          {"stored_bytes", stored},
                          {"tensors", tensors},
                          {"metrics", metrics}});
    table.Add({std::to_string(step), FormatTime(manifest->commit_time_ns), FormatBytes(logical),
               FormatBytes(stored), std::to_string(tensors), metrics_text});
  }
  if (context.json) {
    PrintJson(context.out, Json{{"workdir", workdir}, {"steps", json_steps}});
  } else if (json_steps.empty()) {
    context.out << "no checkpoint in " << workdir << "\n";
  } else {
    table.Print(context.out, {0, 2, 3, 4});
  }
  return Status::OK();
}

namespace {

// How many manifests (other steps) or leaves reference each chunk;
// `read` is a manifest the caller read already (not read again).
Result<std::map<ChunkDigest, uint32_t>> ChunkReferenceCounts(const Inspector& inspector,
                                                             const Manifest& read) {
  std::map<ChunkDigest, uint32_t> counts;
  Result<std::vector<int64_t>> steps = inspector.Steps();
  if (!steps.ok()) return steps.status();
  auto count = [&counts](const Manifest& manifest) {
    for (const ManifestNode& node : manifest.nodes) {
      for (const ChunkRef& chunk : node.chunks) ++counts[chunk.digest];
    }
  };
  for (int64_t step : *steps) {
    if (step == read.step) {
      count(read);
      continue;
    }
    Result<Manifest> manifest = inspector.ReadManifest(step);
    if (manifest.status().IsNotFound() || IsUnreadable(manifest.status())) continue;
    if (!manifest.ok()) return manifest.status();
    count(*manifest);
  }
  return counts;
}

// A chunk is shared when it is referenced more than once anywhere.
uint64_t SharedChunks(const ManifestNode& node, const std::map<ChunkDigest, uint32_t>& references) {
  uint64_t shared = 0;
  for (const ChunkRef& chunk : node.chunks) {
    const auto found = references.find(chunk.digest);
    shared += found != references.end() && found->second > 1;
  }
  return shared;
}

// `show --json`, printed leaf by leaf: a step of a million leaves is never
// a document in memory.
void PrintShowJson(std::ostream& out, const std::string& workdir, int64_t step,
                   const Manifest& manifest, const std::map<ChunkDigest, uint32_t>& references) {
  uint64_t logical = 0;
  uint64_t stored = 0;
  for (const ManifestNode& node : manifest.nodes) {
    if (node.kind != Tree::Kind::kTensor) continue;
    logical += node.byte_size;
    stored += StoredBytes(node);
  }
  JsonStream json(out);
  json.BeginObject();
  json.Key("workdir");
  json.String(workdir);
  json.Key("step");
  json.Number(step);
  json.Key("commit_time");
  json.String(FormatTime(manifest.commit_time_ns));
  json.Key("commit_time_ns");
  json.Number(manifest.commit_time_ns);
  json.Key("logical_bytes");
  json.Number(logical);
  json.Key("stored_bytes");
  json.Number(stored);
  json.Key("metrics");
  json.Value(JsonObject(manifest.metrics));
  json.Key("user_metadata");
  json.Value(JsonObject(manifest.user_metadata));
  json.Key("leaves");
  json.BeginArray();
  for (const ManifestNode& node : manifest.nodes) {
    if (node.kind == Tree::Kind::kMap || node.kind == Tree::Kind::kList) continue;
    json.BeginObject();
    json.Key("path");
    json.String(node.path);
    json.Key("kind");
    json.String(KindName(node.kind));
    if (node.kind != Tree::Kind::kTensor) {
      json.Key("value");
      json.Value(ScalarJson(node));
      json.EndObject();
      continue;
    }
    json.Key("dtype");
    json.String(DTypeName(node.dtype));
    json.Key("shape");
    json.BeginArray();
    for (int64_t dim : node.shape) json.Number(dim);
    json.EndArray();
    json.Key("logical_bytes");
    json.Number(node.byte_size);
    json.Key("stored_bytes");
    json.Number(StoredBytes(node));
    json.Key("chunks");
    json.Number(uint64_t{node.chunks.size()});
    json.Key("shared_chunks");
    json.Number(SharedChunks(node, references));
    json.Key("inline");
    json.Bool(node.inlined);
    // A tensor saved as shards: how many boxes they covered.
    if (node.boxed) {
      json.Key("saved_boxes");
      json.Number(uint64_t{node.boxes.size()});
    }
    json.EndObject();
  }
  json.EndArray();
  json.EndObject();
  json.Flush();
  out << "\n";
}

}  // namespace

Status Show(const Context& context, const std::string& workdir, const std::string& step_text) {
  Result<Inspector> inspector = Inspector::Open(workdir);
  if (!inspector.ok()) return inspector.status();
  Result<int64_t> step = inspector->ParseStep(step_text);
  if (!step.ok()) return step.status();
  Result<Manifest> manifest = inspector->ReadManifest(*step);
  if (!manifest.ok()) return manifest.status();
  Result<std::map<ChunkDigest, uint32_t>> references = ChunkReferenceCounts(*inspector, *manifest);
  if (!references.ok()) return references.status();

  if (context.json) {
    PrintShowJson(context.out, workdir, *step, *manifest, *references);
    return Status::OK();
  }
  // Only what is printed is built: a step of a million leaves makes a
  // million rows.
  Table table({"PATH", "KIND", "DTYPE", "SHAPE | VALUE", "LOGICAL", "STORED", "CHUNKS", "SHARED"});
  uint64_t logical = 0;
  uint64_t stored = 0;
  for (const ManifestNode& node : manifest->nodes) {
    if (node.kind == Tree::Kind::kMap || node.kind == Tree::Kind::kList) continue;
    const std::string path = node.path.empty() ? "(root)" : node.path;
    if (node.kind != Tree::Kind::kTensor) {
      table.Add({path, std::string(KindName(node.kind)), "", ScalarText(node)});
      continue;
    }
    const uint64_t leaf_stored = StoredBytes(node);
    logical += node.byte_size;
    stored += leaf_stored;
    std::string shape = ShapeString(node.shape);
    if (node.boxed) shape += " in " + std::to_string(node.boxes.size()) + " boxes";
    table.Add({path, "tensor", std::string(DTypeName(node.dtype)), shape,
               FormatBytes(node.byte_size), FormatBytes(leaf_stored),
               std::to_string(node.chunks.size()), std::to_string(SharedChunks(node, *references))});
  }
  context.out << "step " << *step << " of " << workdir << ", committed "
              << FormatTime(manifest->commit_time_ns) << "\n";
  for (const auto& [name, value] : manifest->metrics) {
    context.out << "metric " << name << " = " << value << "\n";
  }
  for (const auto& [key, value] : manifest->user_metadata) {
    context.out << "metadata " << key << " = " << value << "\n";
  }
  table.Add({"total", "", "", "", FormatBytes(logical), FormatBytes(stored)});
  table.Print(context.out, {4, 5, 6, 7});
  context.out << "(STORED: the leaf's chunks as compressed, before dedup; SHARED: chunks also "
                 "referenced by other leaves or steps)\n";
  return Status::OK();
}

namespace {

uint64_t DirectoryBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code size_error;
    if (it->is_regular_file(size_error)) {
      const uint64_t size = it->file_size(size_error);
      if (!size_error) total += size;
    }
  }
  return total;
}

}  // namespace

Status Stats(const Context& context, const std::string& workdir) {
  Result<Inspector> inspector = Inspector::Open(workdir);
  if (!inspector.ok()) return inspector.status();
  Result<std::vector<int64_t>> steps = inspector->Steps();
  if (!steps.ok()) return steps.status();
  uint64_t logical = 0;
  uint64_t referenced_stored = 0;  // before dedup
  size_t held = 0;
  size_t unreadable = 0;
  for (int64_t step : *steps) {
    Result<Manifest> manifest = inspector->ReadManifest(step);
    if (manifest.status().IsNotFound()) continue;
    if (IsUnreadable(manifest.status())) {
      ++unreadable;
      continue;
    }
    if (!manifest.ok()) return manifest.status();
    ++held;
    logical += LogicalBytes(*manifest);
    for (const ManifestNode& node : manifest->nodes) referenced_stored += StoredBytes(node);
  }
  uint64_t unique_raw = 0;
  uint64_t unique_stored = 0;
  uint64_t chunks = 0;
  Status status = inspector->store().ForEachIndexEntry([&](const IndexEntry& entry) {
    ++chunks;
    unique_raw += entry.location.raw_size;
    unique_stored += entry.location.stored_size;
    return Status::OK();
  });
  if (!status.ok()) return status;
  // Garbage is unknown while a manifest is unreadable: its chunks may be live.
  Result<GcStats> garbage =
      unreadable > 0 ? Result<GcStats>(GcStats{}) : MeasureGarbage(inspector->store());
  if (!garbage.ok()) return garbage.status();
  uint64_t chunk_files = 0;
  for (const ChunkFile& file : inspector->store().ChunkFiles()) chunk_files += file.bytes;
  const uint64_t on_disk = DirectoryBytes(workdir);
  const uint64_t live_raw_estimate = unique_raw;  // includes garbage chunks' raw bytes
  const double compression =
      unique_stored > 0 ? static_cast<double>(unique_raw) / static_cast<double>(unique_stored) : 1;
  const double dedup =
      live_raw_estimate > 0 ? static_cast<double>(logical) / static_cast<double>(unique_raw) : 1;
  const double overall =
      on_disk > 0 ? static_cast<double>(logical) / static_cast<double>(on_disk) : 1;
  if (context.json) {
    PrintJson(context.out, Json{{"workdir", workdir},
                        {"steps", held},
                        {"unreadable_steps", unreadable},
                        {"logical_bytes", logical},
                        {"chunks", chunks},
                        {"chunks_raw_bytes", unique_raw},
                        {"chunks_stored_bytes", unique_stored},
                        {"referenced_stored_bytes", referenced_stored},
                        {"compression_ratio", compression},
                        {"dedup_ratio", dedup},
                        {"garbage_chunks", garbage->chunks_scanned - garbage->chunks_live},
                        {"garbage_bytes", garbage->garbage_bytes},
                        {"chunk_file_bytes", chunk_files},
                        {"disk_bytes", on_disk},
                        {"logical_over_disk", overall}});
    return Status::OK();
  }
  Table table;
  table.Add({"steps", std::to_string(held)});
  if (unreadable > 0) {
    table.Add({"unreadable steps", std::to_string(unreadable) + " (run verify; garbage unknown)"});
  }
  table.Add({"logical bytes (all steps)", FormatBytes(logical)});
  table.Add({"unique chunks", std::to_string(chunks)});
  table.Add({"  raw", FormatBytes(unique_raw)});
  table.Add({"  stored", FormatBytes(unique_stored)});
  table.Add({"compression (raw / stored)", FormatRatio(compression)});
  table.Add({"dedup (logical / unique raw)", FormatRatio(dedup)});
  table.Add({"garbage", std::to_string(garbage->chunks_scanned - garbage->chunks_live) +
                            " chunks, " + FormatBytes(garbage->garbage_bytes)});
  table.Add({"chunk files", FormatBytes(chunk_files)});
  table.Add({"on disk (all files)", FormatBytes(on_disk)});
  table.Add({"logical / on disk", FormatRatio(overall)});
  table.Print(context.out, {});
  return Status::OK();
}

Status Diff(const Context& context, const std::string& workdir, const std::string& from_text,
            const std::string& to_text) {
  Result<Inspector> inspector = Inspector::Open(workdir);
  if (!inspector.ok()) return inspector.status();
  Result<int64_t> from = inspector->ParseStep(from_text);
  if (!from.ok()) return from.status();
  Result<int64_t> to = inspector->ParseStep(to_text);
  if (!to.ok()) return to.status();
  Result<Manifest> before = inspector->ReadManifest(*from);
  if (!before.ok()) return before.status();
  Result<Manifest> after = inspector->ReadManifest(*to);
  if (!after.ok()) return after.status();

  std::map<std::string, const ManifestNode*> old_leaves;
  for (const ManifestNode& node : before->nodes) {
    if (node.kind != Tree::Kind::kMap && node.kind != Tree::Kind::kList) {
      old_leaves[node.path] = &node;
    }
  }
  Json changes = Json::array();
  Table table({"CHANGE", "PATH", "DETAIL"});
  size_t unchanged = 0;
  auto record = [&](const std::string& change, const std::string& path, const std::string& detail,
                    Json extra) {
    extra["change"] = change;
    extra["path"] = path;
    changes.push_back(extra);
    table.Add({change, path.empty() ? "(root)" : path, detail});
  };
  for (const ManifestNode& node : after->nodes) {
    if (node.kind == Tree::Kind::kMap || node.kind == Tree::Kind::kList) continue;
    auto found = old_leaves.find(node.path);
    if (found == old_leaves.end()) {
      record("added", node.path, std::string(KindName(node.kind)), Json::object());
      continue;
    }
    const ManifestNode& old = *found->second;
    old_leaves.erase(found);
    if (old.kind != node.kind) {
      record("changed", node.path,
             "kind " + std::string(KindName(old.kind)) + " -> " + std::string(KindName(node.kind)),
             Json::object());
    } else if (node.kind != Tree::Kind::kTensor) {
      if (ScalarText(old) != ScalarText(node)) {
        record("changed", node.path, ScalarText(old) + " -> " + ScalarText(node),
               {{"from", ScalarJson(old)}, {"to", ScalarJson(node)}});
      } else {
        ++unchanged;
      }
    } else if (old.dtype != node.dtype || old.shape != node.shape) {
      record("changed", node.path,
             std::string(DTypeName(old.dtype)) + ShapeString(old.shape) + " -> " +
                 std::string(DTypeName(node.dtype)) + ShapeString(node.shape),
             Json::object());
    } else if (old.inlined || node.inlined) {
      // Tiny tensors are kept in the manifest: their bytes compare there. A
      // step of an earlier build may have stored one as a chunk.
      if (old.inlined && node.inlined && old.inline_bytes == node.inline_bytes) {
        ++unchanged;
      } else {
        const bool comparable = old.inlined && node.inlined;
        record("changed", node.path,
               comparable ? "its " + FormatBytes(node.byte_size) + " (kept in the manifest)"
                          : "stored as a chunk in one step, in the manifest in the other: "
                            "bytes not compared",
               {{"inline", true}, {"compared", comparable}});
      }
    } else {
      // Chunks compare position by position when both steps cut the tensor
      // alike; cut differently (another chunk_size_bytes, other shards),
      // equal digests anywhere still mean equal bytes.
      std::set<ChunkDigest> old_digests;
      for (const ChunkRef& chunk : old.chunks) old_digests.insert(chunk.digest);
      const bool same_cut = old.chunks.size() == node.chunks.size() && old.boxed == node.boxed &&
                            std::equal(old.boxes.begin(), old.boxes.end(), node.boxes.begin(),
                                       node.boxes.end(),
                                       [](const ManifestBox& a, const ManifestBox& b) {
                                         return a.box == b.box && a.chunk_count == b.chunk_count;
                                       });
      uint64_t changed_bytes = 0;
      size_t changed_chunks = 0;
      for (size_t k = 0; k < node.chunks.size(); ++k) {
        const bool same = same_cut ? node.chunks[k].digest == old.chunks[k].digest &&
                                         node.chunks[k].raw_size == old.chunks[k].raw_size
                                   : old_digests.count(node.chunks[k].digest) != 0;
        if (!same) {
          ++changed_chunks;
          changed_bytes += node.chunks[k].raw_size;
        }
      }
      if (changed_chunks == 0) {
        ++unchanged;
      } else {
        record("changed", node.path,
               std::to_string(changed_chunks) + " of " + std::to_string(node.chunks.size()) +
                   " chunks (" + FormatBytes(changed_bytes) + ")",
               {{"changed_chunks", changed_chunks},
                {"chunks", node.chunks.size()},
                {"changed_bytes", changed_bytes}});
      }
    }
  }
  for (const auto& [path, node] : old_leaves) {
    record("removed", path, std::string(KindName(node->kind)), Json::object());
  }
  if (context.json) {
    PrintJson(context.out, Json{{"workdir", workdir},
                        {"from", *from},
                        {"to", *to},
                        {"unchanged", unchanged},
                        {"changes", changes}});
    return Status::OK();
  }
  context.out << "step " << *from << " -> step " << *to << ": " << changes.size()
              << " leaves differ, " << unchanged << " unchanged\n";
  if (!changes.empty()) table.Print(context.out, {});
  return Status::OK();
}

}  // namespace ckptdb::inspect
