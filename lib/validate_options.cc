#include "validate_options.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "chunk_codec.h"
#include "ckptdb/coordinator.h"
#include "manifest.h"

namespace ckptdb {
namespace {

constexpr uint32_t kMinChunkSize = 4u << 10;

}  // namespace

Status ValidateOptions(const CheckpointerOptions& options) {
  if (options.save_interval_steps < 1) {
    return Status::InvalidArgument("save_interval_steps must be >= 1, got " +
                                   std::to_string(options.save_interval_steps));
  }
  for (int64_t step : options.save_on_steps) {
    if (step < 0) {
      return Status::InvalidArgument("save_on_steps holds a negative step " + std::to_string(step));
    }
  }
  if (options.max_to_keep.has_value() && *options.max_to_keep < 0) {
    return Status::InvalidArgument("max_to_keep must be unset or >= 0, got " +
                                   std::to_string(*options.max_to_keep));
  }
  if (options.keep_period.has_value() && *options.keep_period < 1) {
    return Status::InvalidArgument("keep_period must be >= 1, got " +
                                   std::to_string(*options.keep_period));
  }
  if (options.keep_time_interval.has_value() && options.keep_time_interval->count() <= 0) {
    return Status::InvalidArgument("keep_time_interval must be positive, got " +
                                   std::to_string(options.keep_time_interval->count()) + " s");
  }
  if (options.best_mode != BestMode::kMax && options.best_mode != BestMode::kMin) {
    return Status::InvalidArgument("best_mode must be kMax or kMin");
  }
  if (options.chunk_size_bytes < kMinChunkSize || options.chunk_size_bytes > kMaxChunkRawSize ||
      options.chunk_size_bytes % 8 != 0) {
    return Status::InvalidArgument(
        "chunk_size_bytes must be a multiple of 8 between 4 KiB and 64 MiB, got " +
        std::to_string(options.chunk_size_bytes));
  }
  for (auto [name, value] : {std::pair{"gc_garbage_threshold", options.gc_garbage_threshold},
                             std::pair{"gc_rewrite_threshold", options.gc_rewrite_threshold}}) {
    if (!(value >= 0.0 && value <= 1.0)) {
      return Status::InvalidArgument(std::string(name) + " must be in [0, 1], got " +
                                     std::to_string(value));
    }
  }
  if (options.max_delta_chain > kMaxDeltaDepth) {
    return Status::InvalidArgument("max_delta_chain must be at most " +
                                   std::to_string(kMaxDeltaDepth) + ", got " +
                                   std::to_string(options.max_delta_chain));
  }
  if (options.staging_bytes < options.chunk_size_bytes) {
    return Status::InvalidArgument("staging_bytes must be at least chunk_size_bytes (" +
                                   std::to_string(options.chunk_size_bytes) + "), got " +
                                   std::to_string(options.staging_bytes));
  }
  if (options.wait_for_store.count() < 0 || (options.create && options.wait_for_store.count() != 0)) {
    return Status::InvalidArgument("wait_for_store must be 0 with create = true, and >= 0, got " +
                                   std::to_string(options.wait_for_store.count()) + " ms");
  }
  return ValidateMultiprocessing(options);
}

Status ValidateMultiprocessing(const CheckpointerOptions& options) {
  const MultiprocessingOptions& multi = options.multiprocessing;
  const int count = multi.coordinator ? multi.coordinator->process_count() : 1;
  const int index = multi.coordinator ? multi.coordinator->process_index() : 0;
  if (multi.primary_host < 0 || multi.primary_host >= count) {
    return Status::InvalidArgument("multiprocessing.primary_host must be a process index in [0, " +
                                   std::to_string(count) + "), got " +
                                   std::to_string(multi.primary_host));
  }
  const std::vector<int>& active = multi.active_processes;
  for (size_t i = 0; i < active.size(); ++i) {
    if (active[i] < 0 || active[i] >= count || (i > 0 && active[i] <= active[i - 1])) {
      return Status::InvalidArgument(
          "multiprocessing.active_processes must be distinct process indices in [0, " +
          std::to_string(count) + "), ascending; got " + std::to_string(active[i]) +
          " at position " + std::to_string(i));
    }
  }
  auto is_active = [&](int process) {
    return active.empty() || std::find(active.begin(), active.end(), process) != active.end();
  };
  if (!is_active(multi.primary_host)) {
    return Status::InvalidArgument("multiprocessing.primary_host " +
                                   std::to_string(multi.primary_host) +
                                   " is not in active_processes");
  }
  if (!is_active(index)) {
    return Status::InvalidArgument("process " + std::to_string(index) +
                                   " is not in multiprocessing.active_processes: only those "
                                   "processes open the checkpointer");
  }
  const size_t taking_part = active.empty() ? static_cast<size_t>(count) : active.size();
  if (taking_part > 1 && options.max_delta_chain != 0) {
    return Status::NotSupported(
        "max_delta_chain with several processes (a delta's base is a chunk of the same "
        "process's previous save); use 0");
  }
  return Status::OK();
}

Status ValidateSaveOptions(const SaveOptions& options) {
  if (options.metrics.size() + options.user_metadata.size() > kMaxTreeNodes) {
    return Status::InvalidArgument("more than " + std::to_string(kMaxTreeNodes) +
                                   " metrics and user metadata entries");
  }
  for (const auto& [name, value] : options.metrics) {
    if (std::isnan(value)) return Status::InvalidArgument("metric '" + name + "' is NaN");
  }
  return Status::OK();
}

}  // namespace ckptdb
