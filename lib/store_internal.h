// Private to the store's sources (store.cc: the data path; store_open.cc:
// opening, probing and rebuilding; store_directory.cc: the files beside
// RocksDB's): the RocksDB handles behind a Store and the keys and options
// they share. Nothing outside lib/store*.cc includes this.
#ifndef CKPTDB_LIB_STORE_INTERNAL_H_
#define CKPTDB_LIB_STORE_INTERNAL_H_

#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "step_holds.h"
#include "store.h"
#include "store_format.h"

namespace ckptdb {

// The one seam where RocksDB errors become ckptdb errors.
Status FromRocksDb(const rocksdb::Status& s, std::string_view context);

// How each family and the database are configured (doc/format.md §11).
rocksdb::ColumnFamilyOptions ChunksFamilyOptions();
std::vector<rocksdb::ColumnFamilyDescriptor> FamilyDescriptors();
// `table_files`: how many table files the database holds (it sizes the
// pool of threads that open them).
rocksdb::DBOptions BaseDBOptions(rocksdb::Env* env, size_t table_files);

class Store::Rep {
 public:
  ~Rep();

  // Closes the database and releases the locks and reader folder; idempotent.
  rocksdb::Status CloseDb();

  rocksdb::ColumnFamilyHandle* meta() const { return handles[0]; }
  rocksdb::ColumnFamilyHandle* chunks() const { return handles[1]; }
  rocksdb::ColumnFamilyHandle* index() const { return handles[2]; }
  rocksdb::ColumnFamilyHandle* manifests() const { return handles[3]; }

  rocksdb::ColumnFamilyOptions chunks_options = ChunksFamilyOptions();
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  WriterClaim writer_claim;     // write mode: this process's claim on the store
  LockedFile writer_lock;       // write mode: CKPTDB.lock, held until Close
  std::string secondary_dir;    // read-only mode: the secondary's own files
  LockedFile reader_lock;       // read-only mode: marks secondary_dir alive
  LockedFile reader_presence;   // read-only modes: shared lock on CKPTDB.readers
  std::string staging_dir;      // write mode: SST files before ingestion
  rocksdb::Env* env = nullptr;  // for SST files written outside the database
  std::string store_id;         // 16 bytes
  uint64_t next_generation = 1;          // the next generation to allocate
  uint64_t durable_next_generation = 0;  // ckptdb.next_generation as stored
  std::atomic<bool> damage_seen{false};  // a chunk read failed since open
};

}  // namespace ckptdb

#endif  // CKPTDB_LIB_STORE_INTERNAL_H_
