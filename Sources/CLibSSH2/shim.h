#ifndef FLOTILLA_CLIBSSH2_SHIM_H
#define FLOTILLA_CLIBSSH2_SHIM_H

#include <libssh2.h>
#include <libssh2_sftp.h>

// The event loop's system calls (Glibc does not export these headers to Swift).
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <netinet/tcp.h>

// libssh2 exposes many entry points only as macros, which Swift cannot import.
// Each wrapper below forwards to the `_ex` function the macro expands to.

static inline LIBSSH2_SESSION *flotilla_libssh2_session_init(void) {
    return libssh2_session_init_ex(NULL, NULL, NULL, NULL);
}

static inline int flotilla_libssh2_session_disconnect(LIBSSH2_SESSION *session, const char *description) {
    return libssh2_session_disconnect_ex(session, SSH_DISCONNECT_BY_APPLICATION, description, "");
}

#endif
