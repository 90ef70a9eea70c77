// Only the types and constants: no libpq symbol is linked into flotilla, FlotillaCore
// loads the library when a PostgreSQL journal is first used (LibPQ.swift). So no pkg-config
// either (its flags would link libpq); Debian keeps the header under postgresql/.
#if __has_include(<postgresql/libpq-fe.h>)
#include <postgresql/libpq-fe.h>
#else
#include <libpq-fe.h>
#endif

// PG_DIAG_SQLSTATE is a character-literal macro (in postgres_ext.h), which Swift does not import.
static inline int clibpq_diag_sqlstate(void) { return 'C'; }
