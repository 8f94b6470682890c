// Process start-up and shutdown: configuration, telemetry, the service, the API and signals.
#pragma once

namespace nbu::server {

// Runs the uploader. Exit codes: 0 after a clean shutdown, 2 for invalid configuration
// (one line per problem on stderr), 1 when the API port cannot be bound.
int Main(int argc, char** argv);

}  // namespace nbu::server
