#include "store_model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "chunk_codec.h"
#include "coding.h"
#include "manifest.h"
#include "salvage.h"

namespace ckptdb::testing {
namespace {

namespace fs = std::filesystem;

// A record of a small family, with where it lies.
struct Copy {
  uint64_t sequence = 0;
  bool deletion = false;
  std::string value;
  Extent extent;
};

// The family of a record: the one its table file names, else by its key's
// shape (the families' keys have four distinct shapes).
std::string FamilyOf(std::string_view named, std::string_view key) {
  if (!named.empty()) return std::string(named);
  if (key.starts_with("ckptdb.")) return "default";
  if (key.size() == 24) return "chunks";
  if (key.size() == 16) return "chunk_index";
  if (key.size() == 8) return "manifests";
  return "";
}

bool Survives(const Extent& extent, const std::vector<FileDamage>& damage) {
  for (const FileDamage& file : damage) {
    if (file.file != extent.file) continue;
    if (file.deleted) return false;
    if (file.truncated_to.has_value() && *file.truncated_to < extent.end) return false;
    for (const auto& [begin, end] : file.ranges) {
      if (begin < extent.end && extent.begin < end) return false;
    }
  }
  return true;
}

bool AnySurvives(const std::vector<Extent>& copies, const std::vector<FileDamage>& damage) {
  return std::any_of(copies.begin(), copies.end(),
                     [&](const Extent& extent) { return Survives(extent, damage); });
}

}  // namespace

StoreModel StoreModel::Of(const std::string& dir) {
  StoreModel model;
  std::map<std::string, std::vector<Copy>> small;  // "family/key" -> copies
  auto add_small = [&](const std::string& family, const SalvagedRecord& record, const std::string& file) {
    small[family + "/" + std::string(record.key)].push_back(
        {record.sequence, record.deletion, std::string(record.value),
         {file, record.extent_begin, record.extent_end}});
  };
  for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name == "CKPTDB") model.identity_file_.push_back({name, 0, entry.file_size()});
    auto source = SalvageSource::OpenFile(entry.path().string());
    if (name.ends_with(".sst")) {
      EXPECT_TRUE(source.ok());
      auto table = SalvageTable(**source, [&](const SalvagedRecord& record) {
        const std::string family = FamilyOf(record.family, record.key);
        if (family == "chunks" && !record.deletion) {
          const ChunkDigest digest = ChunkDigest::FromBytes(record.key.data() + 8);
          model.chunks_[digest].push_back({name, record.extent_begin, record.extent_end});
          Result<std::optional<DeltaBase>> base = ParseDeltaBase(record.value);
          if (base.ok() && base->has_value()) model.delta_base_[digest] = (*base)->digest;
        } else if (!family.empty()) {
          add_small(family, record, name);
        }
        return Status::OK();
      });
      EXPECT_TRUE(table.ok() && table->intact) << name;
    }
    if (name.ends_with(".log")) {
      EXPECT_TRUE(source.ok());
      const char* kFamilies[] = {"default", "chunks", "chunk_index", "manifests"};
      auto log = SalvageLog(**source, [&](const std::vector<LoggedRecord>& batch) {
        for (const LoggedRecord& logged : batch) {
          if (logged.family_id < 4 && logged.family_id != 1) {
            add_small(kFamilies[logged.family_id], logged.record, name);
          }
        }
        return Status::OK();
      });
      EXPECT_TRUE(log.ok() && log->damage.empty()) << name;
    }
  }
  for (auto& [key, copies] : small) {
    // The newest version; the copies that hold it.
    const Copy newest = *std::max_element(copies.begin(), copies.end(), [](const Copy& a, const Copy& b) {
      return a.sequence < b.sequence;
    });
    if (newest.deletion) continue;
    std::vector<Extent> extents;
    for (const Copy& copy : copies) {
      if (!copy.deletion && copy.value == newest.value) extents.push_back(copy.extent);
    }
    if (key.starts_with("default/")) {
      model.metadata_[key.substr(8)] = extents;
    } else if (key.starts_with("manifests/")) {
      const int64_t step = static_cast<int64_t>(ReadBigEndian64(key.data() + 10));
      model.manifests_[step] = extents;
      Result<Manifest> manifest = DecodeManifest(newest.value);
      EXPECT_TRUE(manifest.ok());
      if (!manifest.ok()) continue;
      for (const ManifestNode& node : manifest->nodes) {
        for (const ChunkRef& ref : node.chunks) model.step_chunks_[step].insert(ref.digest);
      }
    }
  }
  return model;
}

std::set<int64_t> StoreModel::steps() const {
  std::set<int64_t> steps;
  for (const auto& [step, copies] : manifests_) steps.insert(step);
  return steps;
}

std::set<int64_t> StoreModel::IntactSteps(const std::vector<FileDamage>& damage) const {
  bool identity = AnySurvives(identity_file_, damage);
  if (!identity) {
    identity = true;
    for (const char* key : {"ckptdb.format_version", "ckptdb.store_id", "ckptdb.hash_secret"}) {
      auto found = metadata_.find(key);
      identity = identity && found != metadata_.end() && AnySurvives(found->second, damage);
    }
  }
  std::set<int64_t> intact;
  if (!identity) return intact;
  for (const auto& [step, copies] : manifests_) {
    bool whole = AnySurvives(copies, damage);
    auto needed = step_chunks_.find(step);
    if (needed != step_chunks_.end()) {
      for (ChunkDigest digest : needed->second) {
        // The chunk, and its delta chain down to the chunk stored whole.
        for (int depth = 0; whole && depth <= 33; ++depth) {
          auto copies_of = chunks_.find(digest);
          whole = copies_of != chunks_.end() && AnySurvives(copies_of->second, damage);
          auto base = delta_base_.find(digest);
          if (base == delta_base_.end()) break;
          digest = base->second;
        }
      }
    }
    if (whole) intact.insert(step);
  }
  return intact;
}

}  // namespace ckptdb::testing
