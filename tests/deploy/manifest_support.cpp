#include "deploy/manifest_support.h"

#include "support/process.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

namespace nbu::test {

std::vector<YAML::Node> LoadYamlDocs(const std::string& rel_path) {
  return YAML::LoadAllFromFile(SourceDir() + "/" + rel_path);
}

YAML::Node FindKind(const std::string& rel_path, const std::string& kind) {
  std::vector<YAML::Node> found;
  for (const auto& doc : LoadYamlDocs(rel_path)) {
    if (doc["kind"] && doc["kind"].as<std::string>() == kind) found.push_back(doc);
  }
  EXPECT_EQ(found.size(), 1u) << rel_path << ": expected one " << kind;
  return found.empty() ? YAML::Node() : found.front();
}

std::optional<std::set<std::string>> ConfigVars(const std::string& binary,
                                                const std::string& prefix) {
  const std::string path = BinaryPath(binary);
  if (!std::filesystem::exists(path)) return std::nullopt;
  TempDir dir;
  ChildProcess proc({path, "--config-vars"}, {}, dir / "out");
  proc.CheckAtEnd(std::chrono::seconds(10));  // a sanitizer's report fails the test
  if (proc.Wait(std::chrono::seconds(30)) != 0) return std::nullopt;
  std::set<std::string> vars;
  std::istringstream lines(proc.ReadLog());
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(prefix, 0) == 0) vars.insert(line);
  }
  if (vars.empty()) return std::nullopt;
  return vars;
}

std::set<std::string> ComposeEnvNames(const YAML::Node& service) {
  std::set<std::string> names;
  const YAML::Node env = service["environment"];
  if (!env) return names;  // (a missing key must not reach IsMap: yaml-cpp throws)
  if (env.IsMap()) {
    for (const auto& kv : env) names.insert(kv.first.as<std::string>());
  } else if (env.IsSequence()) {
    for (const auto& item : env) {
      const auto s = item.as<std::string>();
      names.insert(s.substr(0, s.find('=')));
    }
  }
  return names;
}

std::set<std::string> ContainerEnvNames(const YAML::Node& container) {
  std::set<std::string> names;
  for (const auto& e : container["env"]) names.insert(e["name"].as<std::string>());
  return names;
}

std::optional<std::string> ContainerEnvValue(const YAML::Node& container, const std::string& name) {
  for (const auto& e : container["env"]) {
    if (e["name"].as<std::string>() == name && e["value"]) return e["value"].as<std::string>();
  }
  return std::nullopt;
}

double ParseComposeDuration(const std::string& text) {
  double total = 0;
  double number = 0;
  for (const char c : text) {
    if (c >= '0' && c <= '9') {
      number = number * 10 + (c - '0');
    } else {
      total += number * (c == 'h' ? 3600 : c == 'm' ? 60 : 1);
      number = 0;
    }
  }
  return total + number;
}

}  // namespace nbu::test
