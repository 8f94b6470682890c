// The generator's HTTP API: routes on a cpp-httplib server, JSON in and out.
#pragma once

#include "testgen/config.h"
#include "testgen/generator.h"

namespace httplib {
class Server;
}

namespace nbu::testgen {

// Registers GET /healthz, POST /v1/generate/start, POST /v1/generate/stop,
// GET /v1/generate/status and JSON 404s. `generator` must outlive `server`.
// Errors are {"error": <code>, "message": <text>[, "field": <name>]}.
void RegisterRoutes(httplib::Server& server, Generator& generator, const Config& config);

}  // namespace nbu::testgen
