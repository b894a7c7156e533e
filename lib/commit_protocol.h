// The commit protocol: how a save's written chunks become a committed step,
// by this process alone (NewLocalCommit) or by every process of a job
// together, the primary committing (NewCoordinatedCommit, doc/format.md
// §7.1). The checkpointer calls one interface and keeps the step list, the
// save decision's rules, retention and the API; the rounds between
// processes live here, over the messages of multiprocess.h.
//
// Every method is called with the checkpointer's lock held. A coordinated
// protocol releases it around each collective call (CommitHost::unlocked),
// so that a round in progress never blocks the process's other threads'
// queries; every process makes the collective calls in the same order.

#ifndef CKPTDB_LIB_COMMIT_PROTOCOL_H_
#define CKPTDB_LIB_COMMIT_PROTOCOL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "ckptdb/options.h"
#include "ckptdb/status.h"

namespace ckptdb {

class Coordinator;
class PendingSave;
class SavePipeline;
class Store;

// What the protocol asks of the checkpointer during one call; each is
// called with the checkpointer's lock held.
struct CommitHost {
  // Runs a collective call with the lock released (the checkpointer's other
  // threads wait meanwhile, as for a save in flight).
  std::function<Status(const std::function<Status()>&)> unlocked;
  // On the committing process, once the step is durable: retention and GC.
  std::function<Status()> after_commit;
  // On the committing process, when the step did not commit: its listing
  // undone.
  std::function<void()> undo;
  // The committing process's step list, and the other processes' adopting it.
  std::function<std::vector<int64_t>()> steps;
  std::function<void(const std::vector<int64_t>&)> adopt_steps;
};

class CommitProtocol {
 public:
  virtual ~CommitProtocol() = default;

  // Whether this process commits, runs retention and collects garbage: the
  // only process, or the primary.
  virtual bool commits() const = 0;
  // Whether several processes take part.
  virtual bool coordinated() const = 0;
  // Whether Commit may run on a background thread (a coordinator may forbid
  // calls from one: MPI without MPI_THREAD_MULTIPLE).
  virtual bool commits_in_background() const = 0;

  // The save decision, the same on every process: `decide` on the
  // committing process, after `*preempted` has become whether any process
  // signalled a preemption.
  virtual Result<bool> AgreeShouldSave(bool* preempted, const std::function<bool()>& decide) = 0;
  // Before a save's chunks are written: every process's Prepare outcome
  // (`prepared`), agreed. The generation this process writes its chunks
  // into; nullopt for one the store allocates as the chunks are written.
  virtual Result<std::optional<uint64_t>> Begin(const Status& prepared, const CommitHost& host) = 0;
  // After they are written (`written` says how that went): commits `save`.
  // `*committed` says whether the step is durable; an error then is
  // retention's or GC's after it.
  virtual Status Commit(PendingSave& save, const Status& written, const CommitHost& host,
                        bool* committed) = 0;
  // Runs `act` (a deletion, a GC) on the committing process; every process
  // gets its outcome and takes the step list after it.
  virtual Status OnCommitter(const std::function<Status()>& act, const CommitHost& host) = 0;
};

// One process: commits through `pipeline` (which must outlive it).
std::unique_ptr<CommitProtocol> NewLocalCommit(SavePipeline* pipeline);

// The processes of a job: this one and the primary among `coordinator`'s
// (after active_processes).
struct Processes {
  std::shared_ptr<Coordinator> coordinator;
  // The save decisions' own channel (a second coordinator of the same
  // processes): a decision never waits for a save's rounds in flight.
  std::shared_ptr<Coordinator> decisions;
  int index = 0;
  int count = 1;
  int primary = 0;
};

// The processes `options` name; nullopt for a single process (no
// coordinator, or a group of one). Collective: every process calls it.
Result<std::optional<Processes>> JoinProcesses(const MultiprocessingOptions& options);

// Several processes: the primary commits into `store` (which must outlive
// it), the others send it their parts.
std::unique_ptr<CommitProtocol> NewCoordinatedCommit(Processes processes, Store* store);

// Every process's `local` status to the primary; every process gets the
// first failure of all (named by its process), OK when none failed.
Status AgreeOnStatus(Coordinator& coordinator, int primary, const Status& local);

// The primary's status `mine` (the others' is ignored) to every process,
// into `*primarys`; the Status is the round's own.
Status ShareStatus(Coordinator& coordinator, int primary, const Status& mine, Status* primarys);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_COMMIT_PROTOCOL_H_
