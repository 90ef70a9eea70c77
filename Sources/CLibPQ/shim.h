#include <libpq-fe.h>

// PG_DIAG_SQLSTATE is a character-literal macro (in postgres_ext.h), which Swift does not import.
static inline int clibpq_diag_sqlstate(void) { return 'C'; }
