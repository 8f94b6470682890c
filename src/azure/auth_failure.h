// Storage's reason for refusing a request's credentials, made fit for logs and the status.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace nbu::azure {

inline constexpr size_t kMaxAuthFailureDetail = 300;

// The <AuthenticationErrorDetail> of a 401 or 403 body: Azure's reason for refusing the request
// (a clock more than 15 minutes off, a signature that does not match, a SAS outside its time
// frame, a token from another issuer). On one line and at most kMaxAuthFailureDetail characters;
// empty when the body names none. Never a secret: the request's signature that storage quotes
// ("found in the HTTP request '...'") and any sig= value become REDACTED, and the string storage
// signed (the request's headers and metadata, or a SAS's fields) is left out from its sentence on.
std::string AuthFailureDetail(std::string_view body);

}  // namespace nbu::azure
