#include "core/config.h"

#include "support/fs_seams.h"
#include "support/process.h"
#include "support/tmpfs.h"
#include "util/fs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

namespace nbu::core {
namespace {

EnvMap Valid() { return {{"APP_AZURE_CONNECTION_STRING", "x"}}; }

TEST(ConfigTest, DefaultsMatchTheDocumentedTable) {
  Config c;
  std::vector<std::string> errors;
  ASSERT_TRUE(ParseConfig({}, &c, &errors)) << errors.front();
  EXPECT_EQ(c.incoming_dir, "/mnt/nfs/incoming");
  EXPECT_EQ(c.processing_root, "/mnt/nfs/.processing");
  EXPECT_EQ(c.staging_root, "/mnt/staging");
  EXPECT_DOUBLE_EQ(c.poll_interval_s, 2.0);
  EXPECT_DOUBLE_EQ(c.min_file_age_s, 5.0);
  EXPECT_EQ(c.worker_concurrency, 4);
  EXPECT_EQ(c.max_queue_size, 2000);
  EXPECT_EQ(c.azure_max_concurrency, 8);
  EXPECT_DOUBLE_EQ(c.gc_interval_s, 30.0);
  EXPECT_EQ(c.http_host, "127.0.0.1");
  EXPECT_EQ(c.http_port, 8000);
  EXPECT_FALSE(c.replica_id.empty());
  EXPECT_TRUE(c.file_extensions.empty());
  EXPECT_EQ(c.ignore_patterns.size(), 4u);
  // Every default in the table parses back to itself.
  for (const auto& v : ConfigVars()) {
    if (std::string(v.default_text).empty() || v.default_text[0] == '<') continue;
    Config d;
    std::vector<std::string> e;
    EXPECT_TRUE(ParseConfig({{v.name, v.default_text}}, &d, &e)) << v.name;
  }
}

TEST(ConfigTest, ParsesValues) {
  EnvMap env = Valid();
  env["APP_POLL_INTERVAL_S"] = "0.5";
  env["APP_FILE_EXTENSIONS"] = "CSV, .bin ,";
  env["APP_IGNORE_PATTERNS"] = "*.lock";
  env["APP_WORKER_CONCURRENCY"] = "16";
  env["APP_NFS_INCOMING_DIR"] = "/data/in/";
  env["APP_STAGING_FSYNC"] = "true";
  env["APP_NFS_REQUIRE_FS_TYPE"] = " nfs, nfs4 ,";
  Config c;
  std::vector<std::string> errors;
  ASSERT_TRUE(ParseConfig(env, &c, &errors));
  EXPECT_EQ(c.nfs_require_fs_type, (std::vector<std::string>{"nfs", "nfs4"}));
  EXPECT_DOUBLE_EQ(c.poll_interval_s, 0.5);
  EXPECT_EQ(c.file_extensions, (std::vector<std::string>{".csv", ".bin"}));
  EXPECT_EQ(c.ignore_patterns, (std::vector<std::string>{"*.lock"}));
  EXPECT_EQ(c.worker_concurrency, 16);
  EXPECT_EQ(c.incoming_dir, "/data/in");
  EXPECT_TRUE(c.staging_fsync);
}

TEST(ConfigTest, OneLinePerProblemNamingTheVariable) {
  EnvMap env = {
      {"APP_POLL_INTERVAL_S", "fast"},    {"APP_WORKER_CONCURRENCY", "0"},
      {"APP_HTTP_PORT", "99999"},         {"APP_AZURE_CONTAINER", "Bad_Name"},
      {"APP_AZURE_AUTH", "magic"},        {"APP_REPLICA_ID", "a/b"},
      {"APP_STAGING_FSYNC", "maybe"},     {"APP_AZURE_ACCOUNT_KEY", "c2VjcmV0LWtleS12YWx1ZQ=="},
      {"APP_NFS_REQUIRE_FS_TYPE", "NFS4"}};
  Config c;
  std::vector<std::string> errors;
  EXPECT_FALSE(ParseConfig(env, &c, &errors));
  ASSERT_EQ(errors.size(), 8u);
  for (const char* name :
       {"APP_POLL_INTERVAL_S", "APP_WORKER_CONCURRENCY", "APP_HTTP_PORT", "APP_AZURE_CONTAINER",
        "APP_AZURE_AUTH", "APP_REPLICA_ID", "APP_STAGING_FSYNC", "APP_NFS_REQUIRE_FS_TYPE"}) {
    EXPECT_EQ(std::count_if(errors.begin(), errors.end(),
                            [&](const std::string& e) { return e.rfind(name, 0) == 0; }),
              1)
        << name;
  }
  for (const auto& e : errors) EXPECT_EQ(e.find("c2VjcmV0"), std::string::npos) << e;
}

// An upload cap so low that the requests in flight would each get less than the stall limit
// needs is refused, naming the variables that share it; a usable one is taken in megabits.
TEST(ConfigTest, AnUploadCapEveryRequestCanLiveWith) {
  const auto parse = [](const std::string& cap, Config* c) {
    EnvMap env = Valid();
    env["APP_UPLOAD_CAP_MBPS"] = cap;
    std::vector<std::string> errors;
    return ParseConfig(env, c, &errors) ? std::string() : errors.at(0);
  };
  Config c;
  EXPECT_EQ(parse("1", &c), "");
  EXPECT_DOUBLE_EQ(c.upload_cap_mbps, 1.0);
  const std::string low = parse("0.5", &c);  // 62,500 bytes/s for 4 x 8 requests
  EXPECT_EQ(low.rfind("APP_UPLOAD_CAP_MBPS: shared by up to 32 requests", 0), 0u) << low;
  EXPECT_NE(low.find("1953 bytes/s"), std::string::npos) << low;
  EXPECT_EQ(parse("0", &c), "");
  EXPECT_NE(parse("-1", &c), "");
}

// A file up to APP_AZURE_PUT_BLOB_MAX_BYTES may have to go as one Put Block (its name held by
// another writer's uncommitted blocks), which Azure refuses above 4000 MiB: a dead letter.
TEST(ConfigTest, PutBlobMaxIsWhatOneBlockCanCarry) {
  const auto parse = [](const std::string& value) {
    EnvMap env = Valid();
    env["APP_AZURE_PUT_BLOB_MAX_BYTES"] = value;
    Config c;
    std::vector<std::string> errors;
    return ParseConfig(env, &c, &errors) ? std::string() : errors.at(0);
  };
  EXPECT_EQ(parse(std::to_string(4000ull << 20)), "");
  EXPECT_EQ(parse(std::to_string((4000ull << 20) + 1)).rfind("APP_AZURE_PUT_BLOB_MAX_BYTES:", 0),
            0u);
}

// Numbers are decimal: strtod would read "0x10" as 16 seconds and "0x1p4" too; infinities and
// NaN are refused as before. A leading '+' and an exponent are fine.
TEST(ConfigTest, NumbersAreDecimalAndFinite) {
  const auto parse = [](const char* value, double* out) {
    EnvMap env = Valid();
    env["APP_POLL_INTERVAL_S"] = value;
    Config c;
    std::vector<std::string> errors;
    const bool ok = ParseConfig(env, &c, &errors);
    *out = c.poll_interval_s;
    return ok ? std::string() : errors.size() == 1 ? errors[0] : "?";
  };
  double d = 0;
  for (const char* bad : {"0x10", "0X10", "0x1p4", "0x1P4", "inf", "-inf", "nan", "NaN", "infinity",
                          "1e999", "+", "+-1", "1,5", "10s"}) {
    const std::string e = parse(bad, &d);
    EXPECT_EQ(e, "APP_POLL_INTERVAL_S: must be a decimal number, got \"" + std::string(bad) + "\"")
        << bad;
    EXPECT_DOUBLE_EQ(d, 2.0) << bad;
  }
  for (const auto& [good, value] :
       std::initializer_list<std::pair<const char*, double>>{{"16", 16},
                                                             {"+16", 16},
                                                             {" 0.5 ", 0.5},
                                                             {".5", 0.5},
                                                             {"5.", 5},
                                                             {"1e1", 10},
                                                             {"2.5E-1", 0.25},
                                                             {"010", 10}}) {
    EXPECT_EQ(parse(good, &d), "") << good;
    EXPECT_DOUBLE_EQ(d, value) << good;
  }
  // A bound is written as the number it is, not in the stream's six digits (3.1536e+07).
  EnvMap env = Valid();
  env["APP_COMPLETED_RETENTION_S"] = "99999999";
  env["APP_POLL_INTERVAL_S"] = "0.001";
  Config c;
  std::vector<std::string> errors;
  EXPECT_FALSE(ParseConfig(env, &c, &errors));
  EXPECT_EQ(errors,
            (std::vector<std::string>{
                "APP_POLL_INTERVAL_S: must be between 0.01 and 3600, got 0.001",
                "APP_COMPLETED_RETENTION_S: must be between 0 and 31536000, got 99999999"}));
}

// A directory or the container set but empty (a blank manifest value, a .env line cut short) is
// an error, not the default: APP_NFS_INCOMING_DIR= must not quietly watch /mnt/nfs/incoming.
// Unset keeps the default; optional values (a secret, the access tier) empty stay unset.
TEST(ConfigTest, DirectoriesAndContainerSetButEmptyAreRefused) {
  for (const char* name : {"APP_NFS_INCOMING_DIR", "APP_NFS_PROCESSING_ROOT", "APP_NFS_FAILED_ROOT",
                           "APP_LOCAL_STAGING_ROOT", "APP_AZURE_CONTAINER"}) {
    for (const char* blank : {"", "  "}) {
      EnvMap env = Valid();
      env[name] = blank;
      Config c;
      std::vector<std::string> errors;
      EXPECT_FALSE(ParseConfig(env, &c, &errors)) << name;
      ASSERT_EQ(errors.size(), 1u) << name;
      EXPECT_EQ(errors[0].rfind(std::string(name) + ": is set but empty", 0), 0u) << errors[0];
    }
  }
  // Blank counts as empty (the process environment is not trimmed as an env file's lines are).
  for (const char* blank : {"", "  "}) {
    EnvMap env = Valid();
    for (const char* name : {"APP_AZURE_ACCOUNT_KEY", "APP_AZURE_SAS_TOKEN",
                             "APP_AZURE_ACCESS_TIER", "APP_FILE_EXTENSIONS", "APP_POLL_INTERVAL_S",
                             "APP_AZURE_AUTH", "APP_WORKER_CONCURRENCY"}) {
      env[name] = blank;
    }
    Config c;
    std::vector<std::string> errors;
    EXPECT_TRUE(ParseConfig(env, &c, &errors)) << errors.front();
    EXPECT_EQ(c.incoming_dir, "/mnt/nfs/incoming");
    EXPECT_EQ(c.azure_container, "ingest");
    EXPECT_DOUBLE_EQ(c.poll_interval_s, 2.0);
    EXPECT_EQ(c.worker_concurrency, 4);
    EXPECT_EQ(c.azure_auth, "auto");
  }
}

// A refused configuration still yields what could be read (the checks of the other variables
// run on it, so that one start names every problem), and its lines can be told apart by name.
TEST(ConfigTest, ARefusedConfigurationStillHoldsTheOtherValues) {
  EnvMap env = Valid();
  env["APP_POLL_INTERVAL_S"] = "soon";
  env["APP_NFS_INCOMING_DIR"] = "/data/in";
  std::vector<std::string> errors = {"APP_ENV_FILE: .env line 3 is not KEY=VALUE"};
  Config c;
  EXPECT_FALSE(ParseConfig(env, &c, &errors));
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(c.incoming_dir, "/data/in");
  EXPECT_EQ(c.azure_connection_string, "x");
  EXPECT_DOUBLE_EQ(c.poll_interval_s, 2.0);
  EXPECT_TRUE(ErrorNames(errors, "APP_POLL_INTERVAL_S"));
  EXPECT_TRUE(ErrorNames(errors, "APP_ENV_FILE"));
  EXPECT_FALSE(ErrorNames(errors, "APP_POLL_INTERVAL"));
  EXPECT_FALSE(ErrorNames(errors, "APP_NFS_INCOMING_DIR"));
  // Lines already there (APP_ENV_FILE's) are not this parse's: the rest is valid.
  errors.resize(1);
  EXPECT_TRUE(ParseConfig(Valid(), &c, &errors));
}

// Start-up empties staging and GC prunes the processing tree: a root that is, contains or lies
// inside another would have them delete producers' files. Each such pair is one line naming the
// later variable.
TEST(ConfigTest, RejectsOverlappingRoots) {
  const EnvMap apart = {{"APP_NFS_INCOMING_DIR", "/n/in"},
                        {"APP_NFS_PROCESSING_ROOT", "/n/.p"},
                        {"APP_NFS_FAILED_ROOT", "/n/.f"},
                        {"APP_LOCAL_STAGING_ROOT", "/s"}};
  const auto errors_with = [&](const char* name, const char* value) {
    EnvMap env = apart;
    env[name] = value;
    Config c;
    std::vector<std::string> errors;
    const bool ok = ParseConfig(env, &c, &errors);
    EXPECT_EQ(ok, errors.empty());
    return errors;
  };
  EXPECT_TRUE(errors_with("APP_LOCAL_STAGING_ROOT", "/staging").empty());
  EXPECT_TRUE(errors_with("APP_LOCAL_STAGING_ROOT", "/n/in2").empty());  // a prefix, not a parent
  for (const char* staging : {"/n", "/n/", "/", "/n/in", "/n/in/tmp", "/n/.p", "/n/x/../.f/s"}) {
    const auto errors = errors_with("APP_LOCAL_STAGING_ROOT", staging);
    ASSERT_FALSE(errors.empty()) << staging;
    for (const auto& e : errors) EXPECT_EQ(e.rfind("APP_LOCAL_STAGING_ROOT: must not", 0), 0) << e;
  }
  EXPECT_EQ(errors_with("APP_NFS_PROCESSING_ROOT", "/n/in/.p").size(), 1u);
  EXPECT_EQ(errors_with("APP_NFS_PROCESSING_ROOT", "/n/in").size(), 1u);
  EXPECT_EQ(errors_with("APP_NFS_PROCESSING_ROOT", "/n").size(), 2u);  // holds incoming and failed
  EXPECT_EQ(errors_with("APP_NFS_FAILED_ROOT", "/n/.p/f").size(), 1u);
  const auto errors = errors_with("APP_LOCAL_STAGING_ROOT", "/n");
  EXPECT_EQ(errors.size(), 3u);  // contains incoming, processing and failed
}

// Replica r1's roots for the volume check: incoming, processing and failed under dir/`nfs`,
// staging beside them.
Config VolumeConfig(const test::TempDir& dir, const std::string& nfs) {
  Config c;
  c.replica_id = "r1";
  c.incoming_dir = dir / (nfs + "in");
  c.processing_root = dir / (nfs + "processing");
  c.failed_root = dir / (nfs + "failed");
  c.staging_root = dir / "staging";
  return c;
}

// A probe left by a process killed during the volume check is removed by the next start of the
// same replica; another replica's probe (r10's, r1-x's), and a directory of such a name, are not
// touched.
TEST(ConfigTest, VolumeCheckRemovesThisReplicasLeftoverProbes) {
  test::TempDir dir;
  const Config c = VolumeConfig(dir, "");
  for (const auto* root : {&c.incoming_dir, &c.processing_root, &c.failed_root, &c.staging_root}) {
    ASSERT_TRUE(fs::MkdirAll(*root).ok());
  }
  const std::string ours_in = fs::Join(c.incoming_dir, ".nbu-probe-r1-0123456789abcdef");
  const std::string ours_processing = fs::Join(c.processing_root, ".nbu-probe-r1-fedcba9876543210");
  const std::string other = fs::Join(c.incoming_dir, ".nbu-probe-r10-0123456789abcdef");
  const std::string other_dash = fs::Join(c.incoming_dir, ".nbu-probe-r1-x-0123456789abcdef");
  const std::string session = fs::Join(c.incoming_dir, ".nbu-probe-r1-0123456789abcdee");
  for (const auto* path : {&ours_in, &ours_processing, &other, &other_dash}) {
    ASSERT_TRUE(fs::CreateExclusive(*path).ok());
  }
  ASSERT_TRUE(fs::MkdirAll(session).ok());
  std::vector<std::string> errors;
  CheckVolume(c, &errors);
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_FALSE(fs::Stat(ours_in).ok());
  EXPECT_FALSE(fs::Stat(ours_processing).ok());
  EXPECT_TRUE(fs::Stat(other).ok());
  EXPECT_TRUE(fs::Stat(other_dash).ok());
  EXPECT_TRUE(fs::Stat(session).ok());
  // And the check leaves no probe of its own behind.
  for (const auto* root : {&c.incoming_dir, &c.processing_root, &c.failed_root, &c.staging_root}) {
    const auto entries = fs::ListDir(*root);
    ASSERT_TRUE(entries.ok());
    for (const auto& e : *entries) {
      const std::string path = fs::Join(*root, e.name);
      EXPECT_FALSE(e.name.starts_with(".nbu-probe-r1-") && path != other_dash && path != session)
          << path;
    }
  }
}

// With APP_NFS_REQUIRE_FS_TYPE, a root on another file system (a volume that is not mounted
// leaves its mount point on the local disk) stops start-up, one line per root, before anything
// is made there; on the required type the check goes on as before. A tmpfs stands for the volume.
TEST(ConfigTest, VolumeCheckRefusesRootsOffTheRequiredFileSystem) {
  test::TempDir dir;
  const std::string volume = dir / "vol";
  test::ScopedTmpfs tmpfs(volume, "1m");
  if (!tmpfs.ok()) GTEST_SKIP() << tmpfs.error();
  Config c = VolumeConfig(dir, "vol/");
  c.nfs_require_fs_type = {"nfs", "nfs4"};
  std::vector<std::string> errors;
  CheckVolume(c, &errors);
  ASSERT_EQ(errors.size(), 3u) << testing::PrintToString(errors);
  EXPECT_EQ(errors[0], "APP_NFS_INCOMING_DIR: " + c.incoming_dir + " is on tmpfs (mounted at " +
                           volume +
                           "), not nfs or nfs4 as APP_NFS_REQUIRE_FS_TYPE requires: is the "
                           "volume mounted?");
  EXPECT_EQ(errors[1].rfind("APP_NFS_PROCESSING_ROOT: " + c.processing_root + " is on tmpfs", 0),
            0u);
  EXPECT_EQ(errors[2].rfind("APP_NFS_FAILED_ROOT: " + c.failed_root + " is on tmpfs", 0), 0u);
  for (const auto* root : {&c.incoming_dir, &c.processing_root, &c.failed_root, &c.staging_root}) {
    EXPECT_FALSE(fs::Stat(*root).ok()) << *root << " was made";
  }
  c.nfs_require_fs_type = {"nfs", "tmpfs"};
  errors.clear();
  CheckVolume(c, &errors);
  EXPECT_EQ(errors, std::vector<std::string>{});
  EXPECT_TRUE(fs::Stat(c.processing_root).ok());
}

// Staging that is one of the NFS trees through a symlink passes ParseConfig's comparison of the
// paths as written; the volume check resolves them.
TEST(ConfigTest, VolumeCheckRefusesStagingThatResolvesIntoAnNfsTree) {
  test::TempDir dir;
  const Config c = VolumeConfig(dir, "nfs/");
  ASSERT_TRUE(fs::MkdirAll(c.processing_root).ok());
  ASSERT_EQ(::symlink(c.processing_root.c_str(), c.staging_root.c_str()), 0);
  std::vector<std::string> errors;
  CheckVolume(c, &errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].rfind("APP_LOCAL_STAGING_ROOT: " + c.staging_root + " resolves to", 0), 0)
      << errors[0];
  EXPECT_NE(errors[0].find("APP_NFS_PROCESSING_ROOT"), std::string::npos) << errors[0];
}

// So is every other pair: a failed tree that is a symlink into incoming would have its dead
// letters taken as producer files, and a processing tree that is the failed tree would have
// them swept with its claims.
TEST(ConfigTest, VolumeCheckRefusesAnNfsTreeThatResolvesIntoAnother) {
  test::TempDir dir;
  Config c = VolumeConfig(dir, "nfs/");
  const std::string dead = c.incoming_dir + "/dead";
  ASSERT_TRUE(fs::MkdirAll(dead).ok());
  ASSERT_EQ(::symlink(dead.c_str(), c.failed_root.c_str()), 0);
  std::vector<std::string> errors;
  CheckVolume(c, &errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], "APP_NFS_FAILED_ROOT: " + c.failed_root + " resolves to " + dead +
                           ", which is, contains or lies inside APP_NFS_INCOMING_DIR (" +
                           c.incoming_dir + ")");
  // Two trees through one link: the processing tree is the failed one. The line names the link.
  c = VolumeConfig(dir, "other/");
  ASSERT_TRUE(fs::MkdirAll(c.failed_root).ok());
  ASSERT_EQ(::symlink(c.failed_root.c_str(), c.processing_root.c_str()), 0);
  errors.clear();
  CheckVolume(c, &errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0],
            "APP_NFS_PROCESSING_ROOT: " + c.processing_root + " resolves to " + c.failed_root +
                ", which is, contains or lies inside APP_NFS_FAILED_ROOT (" + c.failed_root + ")");
}

// The volume's passing trouble at start-up is not a setting that cannot work: a probe rename the
// server carried out but whose reply was lost (a retransmission's ENOENT), and one that failed
// with ESTALE once, pass; a rename that keeps failing says so, not "one file system".
TEST(ConfigTest, VolumeCheckOutlastsAPassingVolumeError) {
  test::TempDir dir;
  const Config c = VolumeConfig(dir, "nfs/");
  int renames = 0;
  const test::ScopedPathPairCall seam(
      [&](const char*, const std::string& from, const std::string& to) {
        ++renames;
        if (renames == 1 && ::rename(from.c_str(), to.c_str()) != 0) return -1;
        if (renames <= 2) {
          errno = renames == 1 ? ENOENT : ESTALE;
          return -1;
        }
        return ::rename(from.c_str(), to.c_str());
      });
  std::vector<std::string> errors;
  CheckVolume(c, &errors);
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_EQ(renames, 3);
  for (const std::string& root : {c.incoming_dir, c.processing_root, c.failed_root}) {
    const auto left = fs::ListDir(root);
    ASSERT_TRUE(left.ok()) << root;
    EXPECT_TRUE(left->empty()) << left->front().name;
  }
  fs::SetPathPairCallForTest([](const char*, const std::string&, const std::string&) {
    errno = EIO;
    return -1;
  });
  errors.clear();
  CheckVolume(c, &errors);
  ASSERT_EQ(errors.size(), 2u);
  for (const std::string& e : errors) {
    EXPECT_NE(e.find("kept failing"), std::string::npos) << e;
    EXPECT_EQ(e.find("one file system"), std::string::npos) << e;
  }
}

// The probe's create carried out but answered EEXIST on its first try (a retransmission's reply):
// its name is fresh, so the file is the probe's own, not a reason to refuse to start.
TEST(ConfigTest, VolumeCheckTakesAProbeCreateAnsweredEexistForItsOwn) {
  test::TempDir dir;
  const Config c = VolumeConfig(dir, "nfs/");
  int lost = 0;
  const test::ScopedPathCall seam([&](const char* op, const std::string& path) {
    if (std::string_view(op) != "create" || path.find(".nbu-probe-") == std::string::npos) return 0;
    ++lost;
    ::close(::open(path.c_str(), O_WRONLY | O_CREAT, 0644));
    return EEXIST;
  });
  std::vector<std::string> errors;
  CheckVolume(c, &errors);
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_EQ(lost, 2) << "staging's and incoming's";
  for (const std::string& root :
       {c.staging_root, c.incoming_dir, c.processing_root, c.failed_root}) {
    const auto left = fs::ListDir(root);
    ASSERT_TRUE(left.ok()) << root;
    EXPECT_TRUE(left->empty()) << left->front().name;
  }
}

// The probe's removal failing once with a passing error (ESTALE) is tried again: the probe is not
// left in the failed root (or staging) until this replica's next start.
TEST(ConfigTest, VolumeCheckRemovesItsProbeDespiteAPassingError) {
  test::TempDir dir;
  const Config c = VolumeConfig(dir, "nfs/");
  // And one left by an earlier start, killed mid-check.
  ASSERT_TRUE(fs::MkdirAll(c.processing_root).ok());
  const std::string leftover = fs::Join(c.processing_root, ".nbu-probe-r1-0123456789abcdef");
  ASSERT_TRUE(fs::CreateExclusive(leftover).ok());
  std::vector<std::string> refused;
  const test::ScopedPathCall seam([&](const char* op, const std::string& path) {
    if (std::string_view(op) != "unlink" || path.find(".nbu-probe-") == std::string::npos) return 0;
    const bool again = std::find(refused.begin(), refused.end(), path) != refused.end();
    if (again) return 0;
    refused.push_back(path);
    return ESTALE;
  });
  std::vector<std::string> errors;
  CheckVolume(c, &errors);
  EXPECT_TRUE(errors.empty()) << errors.front();
  ASSERT_EQ(refused.size(), 3u) << "the leftover, staging's probe, the one moved into failed/";
  EXPECT_EQ(refused[0], leftover);
  EXPECT_EQ(fs::Dirname(refused[2]), c.failed_root);
  for (const std::string& root :
       {c.staging_root, c.incoming_dir, c.processing_root, c.failed_root}) {
    const auto left = fs::ListDir(root);
    ASSERT_TRUE(left.ok()) << root;
    EXPECT_TRUE(left->empty()) << left->front().name;
  }
}

// A root that is a regular file (or lies under one) fails with ENOTDIR: said as such, not as a
// matter of file systems and mounts; the probe leaves nothing behind.
TEST(ConfigTest, VolumeCheckSaysWhenARootIsNotADirectory) {
  test::TempDir dir;
  Config c = VolumeConfig(dir, "nfs/");
  ASSERT_TRUE(fs::MkdirAll(c.incoming_dir).ok());
  std::ofstream(c.failed_root) << "a file";
  std::ofstream(dir / "plain") << "a file";
  c.processing_root = dir / "plain/processing";
  std::vector<std::string> errors;
  CheckVolume(c, &errors);
  ASSERT_EQ(errors.size(), 2u) << errors[0];
  EXPECT_EQ(errors[0], "APP_NFS_PROCESSING_ROOT: " + c.processing_root +
                           " is not a directory: a part of its path is a file");
  EXPECT_EQ(errors[1], "APP_NFS_FAILED_ROOT: " + c.failed_root + " is not a directory");
  const auto left = fs::ListDir(c.incoming_dir);
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty()) << left->front().name;
  // Staging and incoming too.
  c = VolumeConfig(dir, "nfs2/");
  c.staging_root = dir / "staging2";
  std::ofstream(c.staging_root) << "a file";
  std::ofstream(dir / "nfs2in") << "a file";
  c.incoming_dir = dir / "nfs2in";
  errors.clear();
  CheckVolume(c, &errors);
  EXPECT_EQ(errors, (std::vector<std::string>{
                        "APP_LOCAL_STAGING_ROOT: " + c.staging_root + " is not a directory",
                        "APP_NFS_INCOMING_DIR: " + c.incoming_dir + " is not a directory"}));
}

// A SAS URL in APP_AZURE_ACCOUNT_URL is refused without repeating its signature.
TEST(ConfigTest, AccountUrlWithAQueryIsRefusedWithoutEchoingIt) {
  for (const char* url : {"https://acct.blob.core.windows.net/?sv=2022-11-02&sig=c2VjcmV0",
                          "https://acct.blob.core.windows.net#sig=c2VjcmV0"}) {
    Config c;
    std::vector<std::string> errors;
    EXPECT_FALSE(ParseConfig({{"APP_AZURE_ACCOUNT_URL", url}}, &c, &errors)) << url;
    ASSERT_EQ(errors.size(), 1u) << url;
    EXPECT_EQ(errors[0].rfind("APP_AZURE_ACCOUNT_URL: must not have a query", 0), 0) << errors[0];
    EXPECT_EQ(errors[0].find("c2VjcmV0"), std::string::npos) << errors[0];
  }
  Config c;
  std::vector<std::string> errors;
  EXPECT_TRUE(
      ParseConfig({{"APP_AZURE_ACCOUNT_URL", "https://acct.blob.core.windows.net/"}}, &c, &errors));
}

// Values that would be accepted and then quietly do the wrong thing: "*.csv" as an extension
// (no file ends in ".*.csv", so nothing uploads), an account URL without a host or with a user
// and password (printed with the endpoint), a first retry delay above the cap, an API token
// too short to resist guessing. One line each, no value echoed.
TEST(ConfigTest, ValuesThatWouldMisleadAreRefused) {
  const auto error_of = [](const char* name, const char* value) {
    EnvMap env = Valid();
    env[name] = value;
    Config c;
    std::vector<std::string> errors;
    const bool ok = ParseConfig(env, &c, &errors);
    EXPECT_EQ(ok, errors.empty());
    return ok ? std::string() : errors.size() == 1 ? errors[0] : "?";
  };
  for (const char* ext : {"*.csv", ".c?v", "csv bin", ".[ch]", ".csv\n.bin", ".c\x01sv"}) {
    EXPECT_EQ(error_of("APP_FILE_EXTENSIONS", ext).rfind("APP_FILE_EXTENSIONS: invalid", 0), 0u)
        << ext;
  }
  EXPECT_EQ(error_of("APP_FILE_EXTENSIONS", "csv,.tar.gz"), "");
  // Filters that leave nothing to upload: every file of an extension ignored (the default
  // patterns ignore *.tmp), every name ignored, or a pattern with a path that never matches.
  EXPECT_EQ(error_of("APP_FILE_EXTENSIONS", ".tmp"),
            "APP_FILE_EXTENSIONS: files ending in .tmp are all ignored by the pattern \"*.tmp\" of "
            "APP_IGNORE_PATTERNS: none would be uploaded");
  EXPECT_EQ(error_of("APP_FILE_EXTENSIONS", ".csv,.part")
                .rfind("APP_FILE_EXTENSIONS: files ending "
                       "in .part are all ignored",
                       0),
            0u);
  EXPECT_EQ(error_of("APP_IGNORE_PATTERNS", "*.lock,**"),
            "APP_IGNORE_PATTERNS: \"**\" ignores every file: nothing would be uploaded");
  for (const char* all : {"?*", "[!.]*", "*?*"}) {
    EXPECT_EQ(error_of("APP_IGNORE_PATTERNS", all),
              "APP_IGNORE_PATTERNS: \"" + std::string(all) +
                  "\" ignores every file: nothing would be uploaded");
  }
  // With dot-files taken, [!.]* keeps them (a Zarr store's metadata alone, say), and [!.]*.csv
  // keeps the .csv files that are dot-files; ?* and * still ignore every name.
  {
    EnvMap env = Valid();
    env["APP_INCLUDE_DOT_FILES"] = "true";
    env["APP_IGNORE_PATTERNS"] = "[!.]*";
    Config c;
    std::vector<std::string> errors;
    EXPECT_TRUE(ParseConfig(env, &c, &errors)) << errors.front();
    for (const char* all : {"?*", "*"}) {
      env["APP_IGNORE_PATTERNS"] = all;
      errors.clear();
      EXPECT_FALSE(ParseConfig(env, &c, &errors)) << all;
    }
    env["APP_FILE_EXTENSIONS"] = ".csv";
    env["APP_IGNORE_PATTERNS"] = "[!.]*.csv";
    errors.clear();
    EXPECT_TRUE(ParseConfig(env, &c, &errors)) << errors.front();
    env["APP_INCLUDE_DOT_FILES"] = "false";
    errors.clear();
    EXPECT_FALSE(ParseConfig(env, &c, &errors)) << "without dot-files, every .csv is ignored";
  }
  // A pattern that keeps some names is no mistake: [!r]* uploads only names that begin with r.
  for (const char* some : {".*", "*.*", "~*", "[a-z]*", "??*", "*[0-9]*", "[!r]*", "[!_]*", "*[!~]",
                           "[!d]*", "*[ -~]", "*[!\u00E9]", "[![:cntrl:]]*"}) {
    EXPECT_EQ(error_of("APP_IGNORE_PATTERNS", some), "") << some;
  }
  EXPECT_EQ(error_of("APP_IGNORE_PATTERNS", "logs/*.txt")
                .rfind("APP_IGNORE_PATTERNS: \"logs/*.txt\" "
                       "has a /",
                       0),
            0u);
  EXPECT_EQ(error_of("APP_FILE_EXTENSIONS", ".csv,.tmp.csv"), "");  // *.tmp: x.tmp.csv goes
  // A pattern that keeps some files of the extension is no mistake (2024.csv goes).
  for (const char* some : {"[a-z]*", "[!r]*", "[!_]*", "*[!0-9].csv"}) {
    EnvMap env = Valid();
    env["APP_FILE_EXTENSIONS"] = ".csv";
    env["APP_IGNORE_PATTERNS"] = some;
    Config c;
    std::vector<std::string> errors;
    EXPECT_TRUE(ParseConfig(env, &c, &errors)) << some << ": " << errors.front();
  }
  EXPECT_EQ(error_of("APP_AZURE_ACCOUNT_URL", "https://"),
            "APP_AZURE_ACCOUNT_URL: has no host name");
  EXPECT_EQ(error_of("APP_AZURE_ACCOUNT_URL", "http://:10000/acct"),
            "APP_AZURE_ACCOUNT_URL: has no host name");
  const std::string userinfo = error_of("APP_AZURE_ACCOUNT_URL", "https://me:c2VjcmV0@acct.x.net");
  EXPECT_EQ(userinfo.rfind("APP_AZURE_ACCOUNT_URL: must not hold a user", 0), 0u) << userinfo;
  // A password holding '/' ends the authority early, even at a numeric "port" ("svc:2024"): an
  // '@' in the path is taken for user info (no account URL has one), and not echoed.
  for (const char* url :
       {"https://svc:2024/Xy9@acct.blob.core.windows.net", "https://me:c2/Xy9@acct.x.net",
        "https://svc/Xy9@acct.blob.core.windows.net", "http://127.0.0.1:10000/Xy9@store"}) {
    EXPECT_EQ(error_of("APP_AZURE_ACCOUNT_URL", url),
              "APP_AZURE_ACCOUNT_URL: must not hold a user name or password (user@host), nor '@' "
              "in its path")
        << url;
  }
  EXPECT_EQ(error_of("APP_AZURE_ACCOUNT_URL", "http://[::1]:10000/devstoreaccount1"), "");
  EXPECT_EQ(error_of("APP_AZURE_RETRY_BASE_S", "61"),
            "APP_AZURE_RETRY_BASE_S: must not exceed APP_AZURE_RETRY_MAX_S");
  for (const char* token : {"short", "has a space in it, far too", "c2VjcmV0c2VjcmV0\"quoted\""}) {
    const std::string e = error_of("APP_HTTP_TOKEN", token);
    EXPECT_EQ(e.rfind("APP_HTTP_TOKEN: must be", 0), 0u) << e;
    EXPECT_EQ(e.find("c2VjcmV0"), std::string::npos) << e;
  }
  EXPECT_EQ(error_of("APP_HTTP_TOKEN", "c2VjcmV0c2VjcmV0LXRva2Vu"), "");
  // Set but empty or blank: the routes would be open, so refused too.
  for (const char* empty : {"", " "}) {
    EXPECT_EQ(error_of("APP_HTTP_TOKEN", empty).rfind("APP_HTTP_TOKEN: is set but empty", 0), 0u)
        << "'" << empty << "'";
  }
}

// A variable the service does not read is named (a typo would otherwise be silently ignored).
TEST(ConfigTest, UnknownVariablesAreNamed) {
  const EnvMap env = {{"APP_AZURE_CONTAINTER", "x"},
                      {"APP_POLL_INTERVAL_S", "1"},
                      {"APP_ENV_FILE", "x"},
                      {"PATH", "/bin"},
                      {"APP_", ""},
                      {"AZURE_CLIENT_ID", "c"}};
  EXPECT_EQ(UnknownVariables(env), (std::vector<std::string>{"APP_", "APP_AZURE_CONTAINTER"}));
}

// The default .env may be missing; a file the user named must be there and readable.
TEST(ConfigTest, ANamedEnvFileMustBeReadable) {
  test::TempDir dir;
  std::vector<std::string> errors;
  LoadEnvironment(dir / "missing.env", /*required=*/false, &errors);
  EXPECT_TRUE(errors.empty());
  LoadEnvironment(dir / "missing.env", /*required=*/true, &errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].rfind("APP_ENV_FILE: ", 0), 0u) << errors[0];
  EXPECT_NE(errors[0].find("missing.env"), std::string::npos) << errors[0];
  errors.clear();
  LoadEnvironment(dir.path(), /*required=*/false, &errors);  // a directory: not readable as one
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], "APP_ENV_FILE: " + dir.path() + " is not a file");
  errors.clear();
  // A FIFO without a writer does not hang start-up: it reads as empty.
  ASSERT_EQ(::mkfifo((dir / "fifo.env").c_str(), 0600), 0);
  LoadEnvironment(dir / "fifo.env", /*required=*/true, &errors);
  EXPECT_TRUE(errors.empty()) << errors[0];
  {  // A pipe, as bash's <(...) gives one, is read to its end.
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    std::thread writer([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // data comes later
      const std::string line = "APP_POLL_INTERVAL_S=9\n";
      EXPECT_EQ(::write(p[1], line.data(), line.size()), static_cast<ssize_t>(line.size()));
      ::close(p[1]);
    });
    const EnvMap piped =
        LoadEnvironment("/proc/self/fd/" + std::to_string(p[0]), /*required=*/true, &errors);
    writer.join();
    ::close(p[0]);
    EXPECT_TRUE(errors.empty()) << errors[0];
    EXPECT_EQ(piped.count("APP_POLL_INTERVAL_S") != 0 ? piped.at("APP_POLL_INTERVAL_S") : "", "9");
  }
  LoadEnvironment("/dev/zero", /*required=*/true, &errors);  // endless: read up to the cap
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("larger than 1 MiB"), std::string::npos) << errors[0];
  errors.clear();
  LoadEnvironment("/dev/null", /*required=*/true, &errors);  // a way to name none
  EXPECT_TRUE(errors.empty()) << errors[0];
  std::ofstream(dir / "app.env") << "APP_POLL_INTERVAL_S=7\n";
  const EnvMap env = LoadEnvironment(dir / "app.env", /*required=*/true, &errors);
  EXPECT_TRUE(errors.empty());
  EXPECT_EQ(env.at("APP_POLL_INTERVAL_S"), "7");
  // A symlink is followed (a ConfigMap or Secret volume's files are symlinks).
  ASSERT_EQ(::symlink((dir / "app.env").c_str(), (dir / "linked.env").c_str()), 0);
  EXPECT_EQ(
      LoadEnvironment(dir / "linked.env", /*required=*/false, &errors).at("APP_POLL_INTERVAL_S"),
      "7");
  EXPECT_TRUE(errors.empty()) << errors[0];
}

TEST(ConfigTest, DotEnvParsing) {
  std::vector<std::string> errors;
  const EnvMap m = ParseDotEnv(
      "# comment\n"
      "export APP_A=1\n"
      "APP_B = \"two words\"\n"
      "APP_C='x=y;z'\n"
      "APP_D=value # trailing comment\n"
      "\n"
      "APP_CS=AccountName=a;AccountKey=k==;\n"
      "APP_E=\".csv,.bin\" # quoted, then a comment\n"
      "APP_F='a # not a comment' #one\n"
      "  # indented comment\n"
      "_app9=x\n"
      "APP_G=\"unclosed\n",
      &errors);
  EXPECT_TRUE(errors.empty()) << errors[0];
  EXPECT_EQ(m.at("APP_A"), "1");
  EXPECT_EQ(m.at("APP_B"), "two words");
  EXPECT_EQ(m.at("APP_C"), "x=y;z");
  EXPECT_EQ(m.at("APP_D"), "value");
  EXPECT_EQ(m.at("APP_CS"), "AccountName=a;AccountKey=k==;");
  EXPECT_EQ(m.at("APP_E"), ".csv,.bin");
  EXPECT_EQ(m.at("APP_F"), "a # not a comment");
  EXPECT_EQ(m.at("APP_G"), "\"unclosed");
  EXPECT_EQ(m.at("_app9"), "x");
  // A byte-order mark (Windows editors) does not become part of the first name.
  EXPECT_EQ(ParseDotEnv("\xEF\xBB\xBF"
                        "APP_H=1\n",
                        &errors)
                .at("APP_H"),
            "1");
  EXPECT_TRUE(errors.empty()) << errors[0];
}

// A line that is not KEY=VALUE is an error naming its number, never its text: with `:` for `=`
// the name would be most of the secret (printed by the unknown-variable warning) and the API
// token would be unset, leaving the POST routes open.
TEST(ConfigTest, DotEnvLinesThatAreNotKeyValueAreErrorsThatDoNotEchoThem) {
  const std::string secret = "Zm9vYmFyYmF6cXV4LXNlY3JldC10b2tlbg==";
  std::vector<std::string> errors;
  const EnvMap m = ParseDotEnv(
      "# the API token\n"
      "APP_HTTP_TOKEN: " +
          secret +
          "\n"
          "APP_POLL_INTERVAL_S=3\n"
          "export Zm9vYmFy\n"
          "\n"
          "9APP=Zm9vYmFy\n"
          "APP-TOKEN=Zm9vYmFy\n"
          "=Zm9vYmFy\n",
      &errors);
  EXPECT_EQ(m, (EnvMap{{"APP_POLL_INTERVAL_S", "3"}}));
  ASSERT_EQ(errors.size(), 5u);
  for (size_t i = 0; i < errors.size(); ++i) {
    const size_t line = std::vector<size_t>{2, 4, 6, 7, 8}[i];
    EXPECT_EQ(errors[i].rfind("line " + std::to_string(line) + " is not KEY=VALUE", 0), 0u)
        << errors[i];
    EXPECT_EQ(errors[i].find("Zm9v"), std::string::npos) << errors[i];
    EXPECT_EQ(errors[i].find("APP_HTTP_TOKEN"), std::string::npos) << errors[i];
  }
  // The loader makes them configuration errors of APP_ENV_FILE, one per line.
  test::TempDir dir;
  std::ofstream(dir / "typo.env") << "APP_POLL_INTERVAL_S=3\nAPP_HTTP_TOKEN: " << secret
                                  << "\nAPP_HTTP_TOKEN " << secret << "\n";
  errors.clear();
  const EnvMap env = LoadEnvironment(dir / "typo.env", /*required=*/true, &errors);
  EXPECT_EQ(env.count("APP_HTTP_TOKEN"), 0u);
  EXPECT_TRUE(UnknownVariables(env).empty());
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0].rfind("APP_ENV_FILE: " + (dir / "typo.env") + " line 2 is not", 0), 0u)
      << errors[0];
  EXPECT_EQ(errors[1].rfind("APP_ENV_FILE: " + (dir / "typo.env") + " line 3 is not", 0), 0u)
      << errors[1];
  for (const auto& e : errors) EXPECT_EQ(nbu::test::PieceOf(secret, e, 6), "") << e;
}

TEST(ConfigTest, GlobMatch) {
  EXPECT_TRUE(GlobMatch("*.tmp", "a.tmp"));
  EXPECT_TRUE(GlobMatch("*.tmp", ".tmp"));
  EXPECT_FALSE(GlobMatch("*.tmp", "a.tmp.csv"));
  EXPECT_TRUE(GlobMatch("data-??.csv", "data-01.csv"));
  EXPECT_FALSE(GlobMatch("data-??.csv", "data-1.csv"));
  EXPECT_TRUE(GlobMatch("*", ""));
  EXPECT_TRUE(GlobMatch("a*b*c", "a-x-b-y-c"));
  EXPECT_FALSE(GlobMatch("a*b*c", "a-x-c-y-b"));
  // A '*' in the name is a character like any other, also where the pattern has one.
  EXPECT_TRUE(GlobMatch("*.tmp", "*a.tmp"));
  EXPECT_TRUE(GlobMatch("a*b*c", "a*xb*c"));
  EXPECT_TRUE(GlobMatch("*", "*"));
  EXPECT_FALSE(GlobMatch("*.tmp", "*.tmq"));
  // Letters in any case, as the extensions; nothing else is folded.
  EXPECT_TRUE(GlobMatch("*.tmp", "DATA.TMP"));
  EXPECT_TRUE(GlobMatch("*.Part", "x.pART"));
  EXPECT_FALSE(GlobMatch("*.tmp", "a.tmq"));
  EXPECT_FALSE(GlobMatch("a@", "a`"));  // 0x40 and 0x60 differ by the case bit, not letters
  EXPECT_FALSE(GlobMatch("[x", "{x"));
  EXPECT_FALSE(GlobMatch("*.t\xc9", "a.t\xe9"));
  // Classes, ranges and their negation; a backslash makes the next character plain.
  EXPECT_TRUE(GlobMatch("*.sw[po]", "notes.swp"));
  EXPECT_TRUE(GlobMatch("*.sw[po]", "NOTES.SWO"));
  EXPECT_FALSE(GlobMatch("*.sw[po]", "notes.swx"));
  EXPECT_TRUE(GlobMatch("[0-9]*.partial", "1data.partial"));
  EXPECT_FALSE(GlobMatch("[0-9]*.partial", "data.partial"));
  EXPECT_TRUE(GlobMatch("[!~]*.xlsx", "report.xlsx"));
  EXPECT_FALSE(GlobMatch("[!~]*.xlsx", "~report.xlsx"));
  EXPECT_TRUE(GlobMatch("\\*.tmp", "*.tmp"));
  EXPECT_FALSE(GlobMatch("\\*.tmp", "a.tmp"));
  EXPECT_TRUE(GlobMatch("[x", "[x"));  // an unclosed class is plain
  // ? is one byte: a character of UTF-8 beyond ASCII is two or more.
  EXPECT_FALSE(GlobMatch("data-?.csv", "data-\xc3\xa9.csv"));
  EXPECT_TRUE(GlobMatch("data-??.csv", "data-\xc3\xa9.csv"));
}

TEST(ConfigTest, VariableTableIsComplete) {
  std::vector<std::string> names;
  for (const auto& v : ConfigVars()) names.emplace_back(v.name);
  for (const char* required : {"APP_AZURE_ACCOUNT_URL",
                               "APP_AZURE_CONTAINER",
                               "APP_AZURE_CONNECTION_STRING",
                               "APP_AZURE_ACCOUNT_NAME",
                               "APP_AZURE_ACCOUNT_KEY",
                               "APP_NFS_INCOMING_DIR",
                               "APP_NFS_PROCESSING_ROOT",
                               "APP_LOCAL_STAGING_ROOT",
                               "APP_POLL_INTERVAL_S",
                               "APP_MIN_FILE_AGE_S",
                               "APP_FILE_EXTENSIONS",
                               "APP_WORKER_CONCURRENCY",
                               "APP_MAX_QUEUE_SIZE",
                               "APP_AZURE_MAX_CONCURRENCY",
                               "APP_GC_INTERVAL_S",
                               "APP_HTTP_HOST",
                               "APP_HTTP_PORT",
                               "APP_REPLICA_ID",
                               "APP_IGNORE_PATTERNS",
                               "APP_SHUTDOWN_GRACE_S"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), required), names.end()) << required;
  }
}

}  // namespace
}  // namespace nbu::core

namespace nbu::core {
namespace {

TEST(ConfigDocsTest, ReadmeDocumentsEveryVariable) {
  std::ifstream in(std::string(NBU_SOURCE_DIR) + "/README.md");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string readme = ss.str();
  ASSERT_FALSE(readme.empty());
  for (const auto& v : ConfigVars()) {
    EXPECT_NE(readme.find(std::string("`") + v.name + "`"), std::string::npos) << v.name;
  }
}

// The README's table is the one --config-markdown prints, row for row: the defaults and meanings
// an operator reads are the ones the binary has.
TEST(ConfigDocsTest, ReadmeTableIsTheGeneratedOne) {
  std::ifstream in(std::string(NBU_SOURCE_DIR) + "/README.md");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string table = ConfigMarkdown();
  EXPECT_NE(ss.str().find(table), std::string::npos)
      << "README.md's variable table differs; replace it with the output of "
         "`nfs-blob-uploader --config-markdown`:\n"
      << table;
}

}  // namespace
}  // namespace nbu::core
