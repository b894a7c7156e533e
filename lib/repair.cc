#include "repair.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <memory>
#include <map>
#include <optional>
#include <set>

#include "manifest.h"
#include "restore.h"
#include "store.h"
#include "verifier.h"

namespace ckptdb {
namespace fs = std::filesystem;
namespace {

// WORKDIR/repair-YYYYMMDDTHHMMSSZ, or with -N appended when taken.
Result<std::string> NewBackupDir(const std::string& workdir) {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm utc{};
  gmtime_r(&now, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &utc);
  const fs::path base = fs::path(workdir) / ("repair-" + std::string(stamp));
  for (int attempt = 0; attempt < 1000; ++attempt) {
    fs::path candidate = base;
    if (attempt > 0) candidate += "-" + std::to_string(attempt);
    std::error_code ec;
    if (fs::create_directory(candidate, ec)) return candidate.string();
    if (ec) return Status::IOError("cannot create " + candidate.string() + ": " + ec.message());
  }
  return Status::IOError("cannot find a free name for a repair folder in " + workdir);
}

// Deletes what `report` found damaged: the manifests of damaged steps, the
// index entries of damaged chunks and of chunks whose generation no chunk
// file holds.
Status DropDamage(Store* store, const VerifyReport& verified, RepairReport* report) {
  std::vector<int64_t> doomed;
  for (const auto& [step, why] : verified.damaged_steps) {
    doomed.push_back(step);
    report->dropped_steps.emplace_back(step, why);
  }
  std::set<ChunkDigest> remove(verified.damaged_chunks.begin(), verified.damaged_chunks.end());
  const std::vector<ChunkFile> files = store->ChunkFiles();
  Status listed = store->ForEachIndexEntry([&](const IndexEntry& entry) {
    if (FileHolding(files, entry.location.generation) == nullptr) remove.insert(entry.digest);
    return Status::OK();
  });
  if (!listed.ok()) return listed;
  if (!doomed.empty()) {
    Status deleted = store->DeleteManifests(doomed);
    if (!deleted.ok()) return deleted;
  }
  if (!remove.empty()) {
    Status updated = store->UpdateIndex({}, std::vector<ChunkDigest>(remove.begin(), remove.end()));
    if (!updated.ok()) return updated;
  }
  report->index_entries_removed = remove.size();
  return Status::OK();
}

// Points the index at the chunks the manifests reference (and their delta
// bases) wherever the chunk files hold them: entries a lost log or table file took with it come back,
// and entries naming a generation without the chunk move to one with it.
Status Reindex(Store* store, RepairReport* report) {
  // Manifests in damaged blocks are lost; the others are kept.
  std::vector<std::string> lost;
  Result<std::map<int64_t, std::string>> manifests = store->ReadableManifests(&lost);
  if (!manifests.ok()) return manifests.status();
  if (!lost.empty()) {
    report->findings.insert(report->findings.end(), lost.begin(), lost.end());
    Status replaced = store->ReplaceManifests(*manifests);
    if (!replaced.ok()) return replaced;
  }
  std::set<ChunkDigest> referenced;
  Result<std::vector<int64_t>> steps = store->ListSteps();
  if (!steps.ok()) return steps.status();
  for (int64_t step : *steps) {
    Result<Manifest> manifest = ReadStepManifest(*store, step);
    if (!manifest.ok()) continue;  // verify reports it
    for (const ManifestNode& node : manifest->nodes) {
      for (const ChunkRef& ref : node.chunks) referenced.insert(ref.digest);
    }
  }
  std::map<ChunkDigest, std::vector<ChunkLocation>> stored;
  std::vector<std::string> unreadable;
  Status scanned = store->ForEachStoredChunk(
      [&](const IndexEntry& entry) {
        stored[entry.digest].push_back(entry.location);
        return Status::OK();
      },
      &unreadable);
  if (!scanned.ok()) return scanned;
  // The bases of referenced delta chunks are referenced too, down their
  // chains (as the chunk files record them).
  for (std::vector<ChunkDigest> pending(referenced.begin(), referenced.end()); !pending.empty();) {
    auto found = stored.find(pending.back());
    pending.pop_back();
    if (found == stored.end()) continue;
    for (const ChunkLocation& at : found->second) {
      if (at.delta_depth != 0 && referenced.insert(at.delta_base).second) {
        pending.push_back(at.delta_base);
      }
    }
  }
  for (const std::string& file : unreadable) {
    report->findings.push_back("unreadable chunk file " + file);
  }
  // An index that cannot be read whole is built anew from the chunk files.
  Status readable = store->ForEachIndexEntry([](const IndexEntry&) { return Status::OK(); });
  if (!readable.ok()) {
    report->findings.push_back("the chunk index is damaged (" + readable.ToString() +
                               "): rebuilt from the chunk files");
    std::vector<IndexEntry> entries;
    for (const auto& [digest, locations] : stored) entries.push_back({digest, locations.back()});
    report->index_entries_restored = entries.size();
    return store->ReplaceIndex(entries);
  }
  std::vector<IndexEntry> put;
  for (const auto& [digest, locations] : stored) {
    if (referenced.count(digest) == 0) continue;
    Result<std::optional<ChunkLocation>> indexed = store->FindChunk(digest);
    if (!indexed.ok()) return indexed.status();
    const bool right = indexed->has_value() &&
                       std::any_of(locations.begin(), locations.end(), [&](const ChunkLocation& at) {
                         return at.generation == (*indexed)->generation &&
                                at.delta_depth == (*indexed)->delta_depth &&
                                at.delta_base == (*indexed)->delta_base;
                       });
    if (!right) put.push_back({digest, locations.back()});
  }
  report->index_entries_restored = put.size();
  return store->UpdateIndex(put, {});
}

// The steps the store holds at the end go into the report.
Status ListAndClose(Store* store, RepairReport* report) {
  Result<std::vector<int64_t>> steps = store->ListSteps();
  if (!steps.ok()) return steps.status();
  report->kept_steps = *steps;
  return store->Close();
}

}  // namespace

Result<RepairReport> RepairStore(const std::string& workdir, rocksdb::Env* env) {
  RepairReport report;
  Result<std::unique_ptr<Store>> store = Store::Open(workdir, Store::Mode::kWrite, env);
  if (store.ok()) {
    Result<VerifyReport> verified = VerifyStore(**store, std::nullopt, {});
    if (!verified.ok()) {
      // The store opened, but its steps cannot even be listed: repair below.
      const std::string problem = verified.status().ToString();
      verified = VerifyReport{};
      verified->problems.push_back(problem);
    }
    if (verified->ok()) {
      Status closed = ListAndClose(store->get(), &report);
      if (!closed.ok()) return closed;
      return report;
    }
    report.findings = verified->problems;
    Result<std::string> backup = NewBackupDir(workdir);
    if (!backup.ok()) return backup.status();
    report.backup_dir = *backup;
    Status copied = (*store)->BackUpMetadata(report.backup_dir);
    if (!copied.ok()) return copied;
  } else {
    // Only damage is rebuilt: a directory that is no store, a store another
    // process writes, or one this build cannot read stays as it is.
    if (store.status().code() != Status::Code::kCorruption) return store.status();
    report.findings.push_back(store.status().ToString());
    Result<std::string> backup = NewBackupDir(workdir);
    if (!backup.ok()) return backup.status();
    report.backup_dir = *backup;
    Status rebuilt = Store::Rebuild(workdir, report.backup_dir, env);
    if (!rebuilt.ok()) return rebuilt.WithContext("repair: the originals are in " + report.backup_dir);
    report.rebuilt = true;
    store = Store::Open(workdir, Store::Mode::kSalvage, env);
    if (!store.ok()) {
      return store.status().WithContext("repair could not open the rebuilt store (the originals are in " +
                                        report.backup_dir + ")");
    }
  }
  report.changed = true;
  Status reindexed = Reindex(store->get(), &report);
  if (!reindexed.ok()) return reindexed.WithContext("repair (originals in " + report.backup_dir + ")");
  Result<VerifyReport> verified = VerifyStore(**store, std::nullopt, {});
  if (!verified.ok()) return verified.status();
  Status dropped = DropDamage(store->get(), *verified, &report);
  if (!dropped.ok()) return dropped.WithContext("repair (originals in " + report.backup_dir + ")");
  // What is left must verify clean.
  verified = VerifyStore(**store, std::nullopt, {});
  if (!verified.ok()) return verified.status();
  if (!verified->ok()) {
    return Status::Corruption("repair left problems in " + workdir + ": " +
                              verified->problems.front());
  }
  Status closed = ListAndClose(store->get(), &report);
  if (!closed.ok()) return closed;
  return report;
}

}  // namespace ckptdb
