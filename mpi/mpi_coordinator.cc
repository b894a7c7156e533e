#include <mpi.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "ckptdb/mpi.h"

namespace ckptdb {
namespace {

Status MpiError(int code, const char* call) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return Status::IOError(std::string(call) + " failed: " + std::string(text, length));
}

// Calls return their error codes instead of aborting the job: the
// communicator gets MPI_ERRORS_RETURN (the program's own keeps its handler).
class MpiCoordinatorImpl final : public Coordinator {
 public:
  MpiCoordinatorImpl(MPI_Comm communicator, bool background_calls_allowed)
      : communicator_(communicator), background_calls_allowed_(background_calls_allowed) {
    MPI_Comm_rank(communicator_, &index_);
    MPI_Comm_size(communicator_, &count_);
  }
  ~MpiCoordinatorImpl() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&communicator_);
  }

  int process_index() const override { return index_; }
  int process_count() const override { return count_; }
  bool background_calls_allowed() const override { return background_calls_allowed_; }

  Status Barrier() override {
    const int code = MPI_Barrier(communicator_);
    return code == MPI_SUCCESS ? Status::OK() : MpiError(code, "MPI_Barrier");
  }

  Status Broadcast(int root, std::string* bytes) override {
    uint64_t size = bytes->size();
    int code = MPI_Bcast(&size, 1, MPI_UINT64_T, root, communicator_);
    if (code != MPI_SUCCESS) return MpiError(code, "MPI_Bcast");
    if (size > static_cast<uint64_t>(std::numeric_limits<int>::max())) {
      return Status::InvalidArgument("a message of " + std::to_string(size) +
                                     " bytes: MPI counts stop at 2^31");
    }
    bytes->resize(size);
    code = MPI_Bcast(bytes->data(), static_cast<int>(size), MPI_BYTE, root, communicator_);
    return code == MPI_SUCCESS ? Status::OK() : MpiError(code, "MPI_Bcast");
  }

  Status Gather(int root, const std::string& bytes, std::vector<std::string>* gathered) override {
    gathered->clear();
    // Sizes first (64-bit), then whether the root can take them all (MPI
    // counts are int): every process learns it, so that all go on to
    // MPI_Gatherv or none does, and no process is left in a collective.
    const uint64_t size = bytes.size();
    const bool at_root = index_ == root;
    std::vector<uint64_t> sizes(at_root ? count_ : 0);
    int code = MPI_Gather(&size, 1, MPI_UINT64_T, sizes.data(), 1, MPI_UINT64_T, root, communicator_);
    if (code != MPI_SUCCESS) return MpiError(code, "MPI_Gather");
    uint64_t total = 0;
    for (uint64_t one : sizes) total += one;
    int fits = total <= static_cast<uint64_t>(std::numeric_limits<int>::max()) ? 1 : 0;
    code = MPI_Bcast(&fits, 1, MPI_INT, root, communicator_);
    if (code != MPI_SUCCESS) return MpiError(code, "MPI_Bcast");
    if (!fits) {
      return Status::InvalidArgument("the processes' messages add up to more than 2^31 bytes "
                                     "(MPI counts are int)");
    }
    std::vector<int> counts(sizes.begin(), sizes.end());
    std::vector<int> offsets(counts.size());
    for (size_t p = 1; p < counts.size(); ++p) offsets[p] = offsets[p - 1] + counts[p - 1];
    std::string received(at_root ? static_cast<size_t>(total) : 0, '\0');
    code = MPI_Gatherv(bytes.data(), static_cast<int>(size), MPI_BYTE, received.data(),
                       counts.data(), offsets.data(), MPI_BYTE, root, communicator_);
    if (code != MPI_SUCCESS) return MpiError(code, "MPI_Gatherv");
    for (size_t p = 0; p < counts.size(); ++p) {
      gathered->push_back(received.substr(static_cast<size_t>(offsets[p]),
                                          static_cast<size_t>(counts[p])));
    }
    return Status::OK();
  }

  Result<std::shared_ptr<Coordinator>> Subgroup(const std::vector<int>& processes) override {
    MPI_Group all;
    MPI_Group some;
    int code = MPI_Comm_group(communicator_, &all);
    if (code != MPI_SUCCESS) return MpiError(code, "MPI_Comm_group");
    code = MPI_Group_incl(all, static_cast<int>(processes.size()), processes.data(), &some);
    MPI_Group_free(&all);
    if (code != MPI_SUCCESS) return MpiError(code, "MPI_Group_incl");
    MPI_Comm sub = MPI_COMM_NULL;
    // Collective over the group's processes only.
    code = MPI_Comm_create_group(communicator_, some, /*tag=*/0x636b, &sub);
    MPI_Group_free(&some);
    if (code != MPI_SUCCESS) return MpiError(code, "MPI_Comm_create_group");
    if (sub == MPI_COMM_NULL) {
      return Status::InvalidArgument("process " + std::to_string(index_) +
                                     " is not among the processes of the subgroup");
    }
    MPI_Comm_set_errhandler(sub, MPI_ERRORS_RETURN);
    return std::shared_ptr<Coordinator>(
        std::make_shared<MpiCoordinatorImpl>(sub, background_calls_allowed_));
  }

 private:
  MPI_Comm communicator_;
  const bool background_calls_allowed_;
  int index_ = 0;
  int count_ = 1;
};

}  // namespace

Result<std::shared_ptr<Coordinator>> MpiCoordinator(MPI_Comm communicator) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!initialized || finalized) {
    return Status::FailedPrecondition("MpiCoordinator needs MPI initialized (MPI_Init_thread)");
  }
  int provided = MPI_THREAD_SINGLE;
  MPI_Query_thread(&provided);
  MPI_Comm duplicate = MPI_COMM_NULL;
  const int code = MPI_Comm_dup(communicator, &duplicate);
  if (code != MPI_SUCCESS) return MpiError(code, "MPI_Comm_dup");
  MPI_Comm_set_errhandler(duplicate, MPI_ERRORS_RETURN);
  return std::shared_ptr<Coordinator>(
      std::make_shared<MpiCoordinatorImpl>(duplicate, provided == MPI_THREAD_MULTIPLE));
}

}  // namespace ckptdb
