// The commands that move steps in and out as safetensors files: export,
// import.

#include <filesystem>

#include "ckptdb/checkpointer.h"
#include "inspect_internal.h"
#include "safetensors.h"

namespace ckptdb::inspect {

namespace {

// An export never writes into a store, the one exported or any other: a
// directory on the way up from FILE's that holds CKPTDB or CURRENT refuses it.
Status CheckOutsideStores(const std::string& out_path) {
  std::filesystem::path parent = std::filesystem::path(out_path).parent_path();
  if (parent.empty()) parent = ".";
  std::error_code ec;
  const std::filesystem::path resolved = std::filesystem::weakly_canonical(parent, ec);
  if (ec) return Status::IOError("cannot resolve '" + parent.string() + "': " + ec.message());
  for (std::filesystem::path at = resolved;; at = at.parent_path()) {
    for (const char* marker : {"CKPTDB", "CURRENT"}) {
      if (std::filesystem::exists(at / marker, ec)) {
        return Status::InvalidArgument("'" + out_path + "' is inside the store " + at.string() +
                                       "; nothing was written");
      }
    }
    if (at == at.parent_path()) break;
  }
  return Status::OK();
}

}  // namespace

Status Export(const Context& context, const std::string& workdir, const std::string& step_text,
              const std::string& out_path, unsigned permissions) {
  Status outside = CheckOutsideStores(out_path);
  if (!outside.ok()) return outside;
  Result<Inspector> inspector = Inspector::Open(workdir);
  if (!inspector.ok()) return inspector.status();
  Result<int64_t> step = inspector->ParseStep(step_text);
  if (!step.ok()) return step.status();
  CheckpointerOptions options;
  options.create = false;
  Result<std::unique_ptr<Checkpointer>> checkpointer = Checkpointer::Open(workdir, options);
  if (!checkpointer.ok()) return checkpointer.status();
  Result<Tree> tree = (*checkpointer)->RestoreTree(*step);
  if (!tree.ok()) return tree.status();
  Result<StepMetadata> metadata = (*checkpointer)->ItemMetadata(*step);
  if (!metadata.ok()) return metadata.status();
  std::map<std::string, std::string> file_metadata = metadata->user_metadata;
  file_metadata["ckptdb.step"] = std::to_string(*step);
  Status status = WriteSafetensors(out_path, *tree, file_metadata, permissions);
  if (!status.ok()) return status;
  if (context.json) {
    PrintJson(context.out, Json{{"workdir", workdir},
                        {"step", *step},
                        {"file", out_path},
                        {"logical_bytes", metadata->logical_bytes}});
  } else {
    context.out << "exported step " << *step << " (" << FormatBytes(metadata->logical_bytes)
                << ") to " << out_path << "\n";
  }
  return Status::OK();
}

Status Import(const Context& context, const std::string& workdir, const std::string& file,
              const ImportFlags& flags) {
  // Mapped, not read: the save reads the tensors' bytes from the page cache,
  // and the mapping outlives the checkpointer (closed below).
  Result<MappedSafetensors> contents = MapSafetensors(file);
  if (!contents.ok()) return contents.status();
  CheckpointerOptions options;
  options.max_to_keep = flags.max_to_keep;
  options.keep_period = flags.keep_period;
  Result<std::unique_ptr<Checkpointer>> checkpointer = Checkpointer::Open(workdir, options);
  if (!checkpointer.ok()) return checkpointer.status();
  SaveOptions save;
  save.zero_copy = true;  // the mapping stays unchanged until Close
  save.force = true;      // an explicit step is always wanted...
  save.user_metadata = contents->metadata;
  save.user_metadata.erase("ckptdb.step");
  // The name as printed: metadata must be UTF-8 to export again.
  save.user_metadata["ckptdb.imported_from"] =
      EscapeInvalidUtf8(std::filesystem::path(file).filename().string());
  // ...but not below the latest step unless --force says so.
  std::optional<int64_t> latest = (*checkpointer)->LatestStep();
  if (!flags.force && latest.has_value() && flags.step <= *latest) {
    return Status::InvalidArgument("step " + std::to_string(flags.step) +
                                   " is not above the latest step " + std::to_string(*latest) +
                                   " (use --force)");
  }
  Result<bool> saved = (*checkpointer)->Save(contents->tree, flags.step, save);
  if (!saved.ok()) return saved.status();
  Result<StepMetadata> metadata = (*checkpointer)->ItemMetadata(flags.step);
  Status closed = (*checkpointer)->Close();
  if (!closed.ok()) return closed;
  const uint64_t logical = metadata.ok() ? metadata->logical_bytes : 0;
  if (context.json) {
    PrintJson(context.out, Json{{"workdir", workdir},
                        {"step", flags.step},
                        {"file", file},
                        {"logical_bytes", logical},
                        {"steps", (*checkpointer)->AllSteps()}});
  } else {
    context.out << "imported " << file << " (" << FormatBytes(logical) << ") as step " << flags.step
                << " of " << workdir << "\n";
  }
  return Status::OK();
}

}  // namespace ckptdb::inspect
