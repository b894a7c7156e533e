// The commands that check and mend: verify, repair, gc.

#include <filesystem>

#include "ckptdb/checkpointer.h"
#include "inspect_internal.h"
#include "repair.h"
#include "verifier.h"

namespace ckptdb::inspect {

// Verify returns whether the store is healthy through `healthy`.
Status Verify(const Context& context, const std::string& workdir,
              const std::optional<std::string>& step_text, bool* healthy) {
  Result<Inspector> inspector = Inspector::Open(workdir);
  // A store readers refuse is examined as it lies on disk, so that the
  // report names the damaged files and the steps that use them.
  std::string open_problem;
  if (!inspector.ok() && inspector.status().code() == Status::Code::kCorruption) {
    open_problem = inspector.status().ToString();
    inspector = Inspector::Open(workdir, Store::Mode::kDiagnose);
    if (!inspector.ok()) {
      *healthy = false;
      if (context.json) {
        PrintJson(context.out, Json{{"workdir", workdir}, {"ok", false}, {"problems", {open_problem}}});
      } else {
        context.out << "problem: " << open_problem << "\nFAILED: the store cannot be read\n";
      }
      return Status::OK();
    }
  }
  if (!inspector.ok()) return inspector.status();
  std::optional<int64_t> step;
  if (step_text.has_value()) {
    Result<int64_t> parsed = inspector->ParseStep(*step_text);
    if (!parsed.ok()) return parsed.status();
    step = *parsed;
  }
  auto progress = [&](uint64_t done, uint64_t total) {
    if (!context.show_progress) return;
    context.err << "\rverifying: " << done << " / " << total << " chunks" << std::flush;
    if (done == total) context.err << "\n";
  };
  Result<VerifyReport> report = VerifyStore(inspector->store(), step, progress);
  if (!report.ok()) return report.status();
  if (!open_problem.empty()) report->problems.insert(report->problems.begin(), open_problem);
  *healthy = report->ok();
  Json damaged_files = Json::array();
  for (const auto& [file, steps] : report->damaged_files) {
    damaged_files.push_back({{"file", file}, {"steps", steps}});
  }
  Json damaged_steps = Json::array();
  for (const auto& [damaged, why] : report->damaged_steps) {
    damaged_steps.push_back({{"step", damaged}, {"problem", why}});
  }
  if (context.json) {
    PrintJson(context.out, Json{{"workdir", workdir},
                        {"ok", report->ok()},
                        {"steps_checked", report->steps_checked},
                        {"chunks_checked", report->chunks_checked},
                        {"bytes_checked", report->bytes_checked},
                        {"problems", report->problems},
                        {"damaged_files", damaged_files},
                        {"damaged_steps", damaged_steps}});
    return Status::OK();
  }
  for (const std::string& problem : report->problems) context.out << "problem: " << problem << "\n";
  for (const auto& [file, steps] : report->damaged_files) {
    context.out << "damaged: " << file << ", used by " << StepList(steps) << "\n";
  }
  context.out << (report->ok() ? "ok" : "FAILED") << ": " << report->steps_checked << " steps, "
              << report->chunks_checked << " chunks (" << FormatBytes(report->bytes_checked)
              << ") checked, " << report->problems.size() << " problems\n";
  return Status::OK();
}

// Repair returns through `healthy` whether anything could be salvaged.
Status Repair(const Context& context, const std::string& workdir, bool* healthy) {
  Result<RepairReport> report = RepairStore(workdir);
  if (!report.ok()) return report.status();
  *healthy = !report->salvaged_nothing();
  if (context.json) {
    Json dropped = Json::array();
    for (const auto& [step, why] : report->dropped_steps) {
      dropped.push_back({{"step", step}, {"reason", why}});
    }
    PrintJson(context.out, Json{{"workdir", workdir},
                        {"changed", report->changed},
                        {"backup_dir", report->backup_dir},
                        {"findings", report->findings},
                        {"kept_steps", report->kept_steps},
                        {"dropped_steps", dropped},
                        {"chunks_kept", report->chunks_kept},
                        {"chunks_dropped", report->chunks_dropped},
                        {"chunk_files_carried", report->chunk_files_carried},
                        {"chunk_files_rewritten", report->chunk_files_rewritten},
                        {"backups_removed", report->backups_removed}});
    return Status::OK();
  }
  if (!report->changed) {
    context.out << "healthy: nothing to repair, nothing changed (" << StepList(report->kept_steps)
                << ")\n";
    return Status::OK();
  }
  for (const std::string& finding : report->findings) context.out << "found: " << finding << "\n";
  for (const auto& [step, why] : report->dropped_steps) {
    context.out << "dropped: step " << step << ": " << why << "\n";
  }
  context.out << "kept: " << StepList(report->kept_steps) << "\n";
  if (!report->backup_dir.empty()) {
    context.out << "chunks: " << report->chunks_kept << " kept, each read back intact; "
                << report->chunks_dropped << " damaged dropped; chunk files: "
                << report->chunk_files_carried << " kept as they were, "
                << report->chunk_files_rewritten << " copied without their damage\n";
    context.out << "the replaced files are in " << report->backup_dir << "\n";
  }
  for (const std::string& removed : report->backups_removed) {
    context.out << "removed the older repair folder " << removed << "\n";
  }
  context.out << (*healthy ? "repaired" : "FAILED: nothing could be salvaged") << "\n";
  return Status::OK();
}

Status Gc(const Context& context, const std::string& workdir) {
  CheckpointerOptions options;
  options.max_to_keep = std::nullopt;  // gc never prunes steps
  // gc never creates a store: a missing or empty directory has none (a
  // writer's open refuses any other directory that is not a store).
  std::error_code ec;
  if (std::filesystem::is_empty(workdir, ec) || ec) {
    return Status::NotFound("no ckptdb store in " + workdir);
  }
  Result<std::unique_ptr<Checkpointer>> checkpointer = Checkpointer::Open(workdir, options);
  if (!checkpointer.ok()) return checkpointer.status();
  Result<GcStats> stats = (*checkpointer)->CollectGarbage();
  if (!stats.ok()) return stats.status();
  Status closed = (*checkpointer)->Close();
  if (!closed.ok()) return closed;
  if (context.json) {
    PrintJson(context.out, Json{{"workdir", workdir},
                        {"chunks_scanned", stats->chunks_scanned},
                        {"chunks_live", stats->chunks_live},
                        {"chunks_deleted", stats->chunks_deleted},
                        {"live_bytes", stats->live_bytes},
                        {"garbage_bytes", stats->garbage_bytes},
                        {"files_deleted", stats->generations_dropped},
                        {"files_rewritten", stats->generations_rewritten},
                        {"bytes_freed", stats->bytes_freed},
                        {"bytes_rewritten", stats->bytes_rewritten},
                        {"seconds", stats->seconds}});
    return Status::OK();
  }
  context.out << "deleted " << stats->chunks_deleted << " of " << stats->chunks_scanned
              << " chunks (" << FormatBytes(stats->garbage_bytes) << "); removed "
              << stats->generations_dropped << " chunk files, rewrote "
              << stats->generations_rewritten << "; freed "
              << FormatBytes(stats->bytes_freed -
                             std::min(stats->bytes_freed, stats->bytes_rewritten))
              << " in " << stats->seconds << " s\n";
  return Status::OK();
}

}  // namespace ckptdb::inspect
