// Socket options for the HTTP servers (the API, nfs-testgen): cpp-httplib's default sets
// SO_REUSEPORT, with which a second server of the same user binds a port already in use and the
// kernel splits the connections between the two without an error. SO_REUSEADDR only: a port
// left in TIME_WAIT by a restart is reused, a port held by a live server is refused.
#pragma once

#include <sys/socket.h>

namespace nbu {

inline void ReuseAddressOnly(int sock) {
  const int yes = 1;
  ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
}

}  // namespace nbu
