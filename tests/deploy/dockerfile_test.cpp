// Lints the Dockerfiles for what the deployment relies on: multi-stage build, non-root user,
// health check, SIGTERM reaching the process (exec-form ENTRYPOINT), the right port.
#include "deploy/manifest_support.h"
#include "support/process.h"

#include <gtest/gtest.h>

#include <sstream>

namespace nbu::test {
namespace {

struct Instruction {
  std::string keyword;  // upper case
  std::string args;
};

// Instructions with continuation lines joined and comments dropped.
std::vector<Instruction> ParseDockerfile(const std::string& rel_path) {
  std::istringstream in(ReadFile(SourceDir() + "/" + rel_path));
  std::vector<Instruction> out;
  std::string pending;
  for (std::string line; std::getline(in, line);) {
    const auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    pending += line.substr(first);
    if (!pending.empty() && pending.back() == '\\') {
      pending.back() = ' ';
      continue;
    }
    const auto space = pending.find(' ');
    out.push_back(
        {pending.substr(0, space), space == std::string::npos ? "" : pending.substr(space + 1)});
    pending.clear();
  }
  return out;
}

std::vector<std::string> ArgsOf(const std::vector<Instruction>& ins, const std::string& kw) {
  std::vector<std::string> out;
  for (const auto& i : ins) {
    if (i.keyword == kw) out.push_back(i.args);
  }
  return out;
}

class DockerfileTest : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(DockerfileTest, HasTheRequiredInstructions) {
  const auto ins = ParseDockerfile(GetParam().first);
  const auto from = ArgsOf(ins, "FROM");
  ASSERT_EQ(from.size(), 2u);
  EXPECT_EQ(from[0], "debian:12 AS build");
  EXPECT_EQ(from[1], "debian:12-slim");
  // USER comes after the last FROM and is neither root nor uid 0.
  const auto user = ArgsOf(ins, "USER");
  ASSERT_FALSE(user.empty());
  const std::string who = user.back().substr(0, user.back().find(':'));
  EXPECT_NE(who, "root");
  EXPECT_NE(who, "0");
  EXPECT_EQ(ArgsOf(ins, "HEALTHCHECK").size(), 1u);
  EXPECT_EQ(ArgsOf(ins, "STOPSIGNAL"), std::vector<std::string>{"SIGTERM"});
  const auto entry = ArgsOf(ins, "ENTRYPOINT");
  ASSERT_EQ(entry.size(), 1u);
  EXPECT_EQ(entry[0].front(), '[') << "ENTRYPOINT must be exec form so SIGTERM reaches the binary";
  EXPECT_EQ(ArgsOf(ins, "EXPOSE"), std::vector<std::string>{GetParam().second});
  EXPECT_TRUE(ArgsOf(ins, "CMD").empty()) << "a shell-form CMD would be appended to ENTRYPOINT";
}

INSTANTIATE_TEST_SUITE_P(Images, DockerfileTest,
                         ::testing::Values(std::make_pair("docker/uploader.Dockerfile", "8000"),
                                           std::make_pair("docker/testgen.Dockerfile", "8080")));

// Docker's health check must give start-up the time Kubernetes gives it (failures within the
// start period do not count): a shorter one reports unhealthy a container that is still
// starting (the volume checks, a managed-identity token fetch) which Kubernetes would wait for.
TEST(HealthCheckTest, StartPeriodIsTheStartupProbesBudget) {
  const auto health = ArgsOf(ParseDockerfile("docker/uploader.Dockerfile"), "HEALTHCHECK");
  ASSERT_EQ(health.size(), 1u);
  const std::string flag = "--start-period=";
  const size_t at = health[0].find(flag);
  ASSERT_NE(at, std::string::npos) << health[0];
  const std::string value =
      health[0].substr(at + flag.size(), health[0].find(' ', at) - at - flag.size());
  ASSERT_FALSE(value.empty());
  ASSERT_EQ(value.back(), 's') << value;
  const int start_period_s = std::stoi(value.substr(0, value.size() - 1));
  const YAML::Node deployment = FindKind("k8s/deployment.yaml", "Deployment");
  YAML::Node startup;
  for (const auto& c : deployment["spec"]["template"]["spec"]["containers"]) {
    if (c["name"].as<std::string>() == "uploader") startup.reset(c["startupProbe"]);
  }
  ASSERT_TRUE(startup.IsMap());
  const int initial = startup["initialDelaySeconds"] ? startup["initialDelaySeconds"].as<int>() : 0;
  EXPECT_EQ(start_period_s,
            initial + startup["periodSeconds"].as<int>() * startup["failureThreshold"].as<int>());
}

TEST(DockerignoreTest, KeepsBuildOutputAndSecretsOutOfTheContext) {
  const std::string text = ReadFile(SourceDir() + "/.dockerignore");
  for (const char* entry : {".git", ".env", "build*/", "node_modules/"}) {
    EXPECT_NE(text.find(std::string("\n") + entry + "\n"), std::string::npos) << entry;
  }
}

}  // namespace
}  // namespace nbu::test
