// Support for the manifest checks: YAML files of the repository and the variable lists the
// binaries print.
#pragma once

#include <yaml-cpp/yaml.h>

#include <optional>
#include <set>
#include <string>
#include <vector>

namespace nbu::test {

// Parses every document of a repository file (path relative to the source root).
std::vector<YAML::Node> LoadYamlDocs(const std::string& rel_path);
// The single document of `rel_path` whose `kind` is `kind`; fails the test when there is not one.
YAML::Node FindKind(const std::string& rel_path, const std::string& kind);
// Lines starting with `prefix` printed by `<binary> --config-vars`; nullopt when the binary is
// missing, fails, or prints no such line (the flag is not implemented).
std::optional<std::set<std::string>> ConfigVars(const std::string& binary,
                                                const std::string& prefix);
// Names of the environment variables a Compose service sets (map or list form).
std::set<std::string> ComposeEnvNames(const YAML::Node& service);
// Names of the env entries of a Kubernetes container.
std::set<std::string> ContainerEnvNames(const YAML::Node& container);
// Value of a Kubernetes container env entry given as `value`; nullopt if absent.
std::optional<std::string> ContainerEnvValue(const YAML::Node& container, const std::string& name);
// "35s", "1m30s" (Compose durations) in seconds.
double ParseComposeDuration(const std::string& text);

}  // namespace nbu::test
