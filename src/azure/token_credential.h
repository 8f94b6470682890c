// Entra ID bearer-token credentials: the shared cache and refresher every token source builds on,
// and the helpers the sources share (endpoint checks, token-response parsing, secret scrubbing).
#pragma once

#include "azure/credential.h"
#include "azure/http.h"
#include "util/clock.h"
#include "util/status.h"
#include "util/text.h"

#include <nlohmann/json_fwd.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nbu::azure {

// The scope and resource of Azure Storage (AZURE.md §12).
inline constexpr const char* kStorageScope = "https://storage.azure.com/.default";
inline constexpr const char* kStorageResource = "https://storage.azure.com";
// Bearer tokens are refused by the service for older x-ms-version values.
inline constexpr const char* kMinBearerApiVersion = "2017-11-09";

// Looks up an environment variable; nullopt when unset. Token sources read AZURE_* and friends
// through this so tests and the service's .env file can supply them.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
// The process environment (getenv); an empty value counts as unset.
EnvLookup ProcessEnv();

struct AccessToken {
  std::string token;                   // secret: never logged
  WallTime expires_on;                 // absolute expiry
  std::optional<WallTime> refresh_on;  // the issuer's hint (refresh_in), if any
};

// Settings every token source takes.
struct TokenSourceOptions {
  std::shared_ptr<HttpTransport> transport;  // null: a private transport with the system CAs
  Clock* clock = &RealClock::Instance();
  std::chrono::milliseconds timeout{15000};  // whole token request
  std::chrono::milliseconds connect_timeout{5000};
};

// A credential that authorizes with `Authorization: Bearer <token>`. Subclasses implement
// FetchToken(); this class caches the token and refreshes it ahead of expiry:
//  * refresh at half-life for lifetimes >= 2 h; else when less than 2 min are left (but never
//    before half-life, so short-lived tokens are reused too); the issuer's refresh_on may bring
//    that forward, to no earlier than kEarliestHintedRefresh after the fetch;
//  * only one fetch runs at a time; while it runs, other threads keep using the cached token if it
//    is still valid, or wait for the fetch and share its result (success or error);
//  * after a failed refresh of a still-valid token, the next attempt waits kRetryAfterFailure;
//  * Invalidate() (after a 401) drops the token this thread last used, so many threads that saw
//    401 for the same token cause one refresh, and a token fetched since is kept; and it drops
//    one at most once per kInvalidateInterval, so storage refusing every token (a tenant that is
//    not the account's) does not turn each request into a token request.
// Thread-safe.
class TokenCredential : public Credential {
 public:
  static constexpr Duration kRefreshMargin = std::chrono::minutes(2);
  static constexpr Duration kHalfLifeFrom = std::chrono::hours(2);
  static constexpr Duration kRetryAfterFailure = std::chrono::seconds(30);
  static constexpr Duration kEarliestHintedRefresh = std::chrono::minutes(5);
  static constexpr Duration kInvalidateInterval = std::chrono::seconds(30);

  // Sets `Authorization: Bearer`. Refuses (kAuth) a URL that is not https unless its host is a
  // loopback address, and an x-ms-version older than 2017-11-09. May block on a token fetch.
  Status Authorize(HttpRequest& req, const std::string& account, bool path_style) final;
  // False when the token this thread used is kept: it is the cached one, and one was dropped
  // less than kInvalidateInterval ago.
  bool Invalidate() final;

  // A valid token (cached or freshly fetched); kAuth/kUnavailable/... on failure, without secrets.
  // A stop request ends a wait for another thread's fetch, and this thread's fetch, with
  // kCancelled (a shutdown does not wait out an identity endpoint's retries).
  Result<std::string> GetToken(std::stop_token stop = {});
  // Number of FetchToken() calls so far (tests and metrics).
  uint64_t FetchCountForTest() const;
  // Threads waiting for another thread's fetch now (tests).
  int WaitersForTest() const;

 protected:
  explicit TokenCredential(Clock& clock) : clock_(clock) {}
  // Fetches a new token from the source. Called by one thread at a time, without the lock held.
  // Errors must not contain secrets (use ScrubSecrets). kCancelled soon after `stop` is requested.
  virtual Result<AccessToken> FetchToken(std::stop_token stop) = 0;
  Clock& clock() const { return clock_; }
  // True while the cached token is still valid: a fetch then only refreshes it early, on the
  // thread of an upload, and should make one try rather than wait out retries.
  bool HoldsAValidToken() const;

 private:
  WallTime RefreshAt(const AccessToken& t, WallTime fetched) const;
  bool UsableLocked(WallTime now) const;  // a cached token that has not expired

  Clock& clock_;
  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  std::optional<AccessToken> cached_;   // guarded by mu_
  WallTime refresh_at_{};               // guarded by mu_
  WallTime next_try_{};                 // guarded by mu_: no refresh before this after a failure
  std::optional<WallTime> dropped_at_;  // guarded by mu_: when Invalidate() last dropped a token
  bool fetching_ = false;               // guarded by mu_
  uint64_t generation_ = 0;             // guarded by mu_: +1 per finished fetch
  uint64_t token_generation_ = 0;       // guarded by mu_: generation_ when cached_ was stored
  uint64_t fetches_ = 0;                // guarded by mu_
  int waiters_ = 0;                     // guarded by mu_
  Status last_error_;                   // guarded by mu_: result of the last failed fetch
};

// --- helpers shared by the token sources ---

// The latest expiry taken, in seconds since the epoch (the year 2255): beyond, the clock's
// nanoseconds overflow (as a value in milliseconds would).
inline constexpr double kMaxTokenEpochS = 9e9;
// Field `key` of `j` as seconds in [0, max], from a number or a numeric string; nullopt when it
// is absent or anything else ("inf", "nan" and 1e400 included).
std::optional<double> NumberField(const nlohmann::json& j, const char* key, double max);

// OK for https URLs, and http URLs whose host is loopback; kAuth naming `what` otherwise.
Status CheckSecureUrl(const std::string& url, const std::string& what);
// application/x-www-form-urlencoded body from name/value pairs.
std::string FormEncode(const std::vector<std::pair<std::string, std::string>>& fields);
// Parses a token endpoint's JSON: access_token (or accessToken) plus expires_in / expires_on /
// refresh_in as numbers or numeric strings. Non-200 answers become an error with the HTTP status,
// `error` code and a shortened error_description, each with `secrets` scrubbed out before it is
// shortened. `who` prefixes messages.
Result<AccessToken> ParseTokenResponse(const HttpResponse& resp, WallTime now,
                                       const std::string& who,
                                       const std::vector<std::string>& secrets = {});
// ScrubSecrets (util/text.h) replaces every occurrence of each secret in a text.
// The calendar fields of a token's expiry (month 1-12), for timegm or mktime.
std::tm CalendarTime(int year, int month, int day, int hour, int min, int sec);
// `s` as the last of `attempts` tries of a token request: " (after N attempts)" added when N > 1.
Status AfterAttempts(const Status& s, int attempts);
// A transport for token requests: `options.transport` or a new one with the system CAs.
std::shared_ptr<HttpTransport> TokenTransport(const TokenSourceOptions& options);

}  // namespace nbu::azure
