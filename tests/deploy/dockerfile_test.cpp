// Lints the Dockerfiles for what the deployment relies on: multi-stage build, non-root user,
// health check, SIGTERM reaching the process (exec-form ENTRYPOINT), the right port.
#include "deploy/manifest_support.h"
#include "support/process.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <set>
#include <sstream>
#include <string_view>

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

// The standard output of a shell command (a fixed one of this test's own).
std::string Output(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  ::pclose(pipe);
  return out;
}

// Each shared library the image's binary needs comes from a package its runtime stage installs,
// or from the base image (debian:12-slim holds libc6, libgcc-s1 and libstdc++6). One missing
// there stops the container at once ("cannot open shared object file"), and the images are not
// built on these machines: the binary built here, and the packages that hold its libraries
// here, stand in for the image's.
TEST_P(DockerfileTest, RuntimeStageInstallsEveryLibraryTheBinaryNeeds) {
  // The host's package names stand in for the image's: the same release only.
  const std::string os = ReadFile("/etc/os-release");
  if (os.find("ID=debian") == std::string::npos ||
      os.find("VERSION_ID=\"12\"") == std::string::npos) {
    GTEST_SKIP() << "not Debian 12, as the images are";
  }
  const auto ins = ParseDockerfile(GetParam().first);
  ASSERT_EQ(ArgsOf(ins, "FROM").back(), "debian:12-slim");
  const size_t stages = ArgsOf(ins, "FROM").size();
  std::set<std::string> installed = {"libc6", "libgcc-s1", "libstdc++6"};
  size_t stage = 0;
  for (const auto& i : ins) {
    if (i.keyword == "FROM") ++stage;
    if (i.keyword != "RUN" || stage != stages) continue;
    const size_t at = i.args.find("apt-get install");
    if (at == std::string::npos) continue;
    std::istringstream words(i.args.substr(at + std::string_view("apt-get install").size()));
    for (std::string w; words >> w && w != "&&";) {
      if (w.front() != '-') installed.insert(w);
    }
  }
  const auto entry = ArgsOf(ins, "ENTRYPOINT");
  ASSERT_EQ(entry.size(), 1u);
  const size_t quote = entry[0].find('"', 2);
  ASSERT_NE(quote, std::string::npos) << entry[0];
  const std::string in_image = entry[0].substr(2, quote - 2);
  const std::string binary = BinaryPath(in_image.substr(in_image.rfind('/') + 1));
  const std::string dynamic = Output("readelf -d '" + binary + "'");
  size_t needed = 0;
  std::istringstream lines(dynamic);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("(NEEDED)") == std::string::npos) continue;
    const size_t open = line.find('['), close = line.find(']');
    ASSERT_TRUE(open != std::string::npos && close > open) << line;
    const std::string soname = line.substr(open + 1, close - open - 1);
    ++needed;
    // The sanitizers' runtimes: in the test builds only.
    if (soname.starts_with("libasan") || soname.starts_with("libubsan") ||
        soname.starts_with("libtsan")) {
      continue;
    }
    const std::string owner = Output("dpkg -S '*-linux-gnu/" + soname + "' 2>/dev/null");
    const std::string package = owner.substr(0, owner.find_first_of(":\n"));
    ASSERT_FALSE(package.empty()) << soname << ": no package holds it";
    EXPECT_TRUE(installed.contains(package))
        << GetParam().first << ": " << soname << " comes from " << package
        << ", which the runtime stage does not install";
  }
  EXPECT_GT(needed, 3u) << dynamic;
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
