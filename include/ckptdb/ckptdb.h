// The whole public API of ckptdb in one include.
#ifndef CKPTDB_CKPTDB_H_
#define CKPTDB_CKPTDB_H_

#include "ckptdb/checkpointer.h"
#include "ckptdb/coordinator.h"
#include "ckptdb/options.h"
#include "ckptdb/results.h"
#include "ckptdb/status.h"
#include "ckptdb/tensor.h"
#include "ckptdb/tree.h"

#endif  // CKPTDB_CKPTDB_H_
