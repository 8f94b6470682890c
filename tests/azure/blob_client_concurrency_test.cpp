// Many threads uploading through one shared BlobClient and HttpTransport against Azurite.
#include "azurite_test_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <thread>

namespace nbu::azure {
namespace {

using nbu::test::kAzuriteAccount;
using nbu::test::kAzuriteKey;

TEST(BlobClientConcurrencyTest, SharedClientAcrossThreads) {
  nbu::test::Azurite azurite;
  nbu::test::TempDir dir;
  const std::string data = nbu::test::PatternBytes(6 * 64 * 1024 + 17, 3);
  nbu::test::WriteFile(dir / "shared.bin", data);
  const int fd = ::open((dir / "shared.bin").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);

  auto cred = SharedKeyCredential::Create(kAzuriteAccount, kAzuriteKey);
  ASSERT_TRUE(cred.ok());
  auto transport = std::make_shared<HttpTransport>(HttpTransportOptions{{}, 4 << 20, 4});
  std::atomic<int> retries{0};
  BlobClient client(test::AzuriteOptions(azurite, "concurrent"), *cred, transport,
                    RealClock::Instance(),
                    {[&](const std::string&) { ++retries; }, {}, {}, {}, {}});
  ASSERT_TRUE(client.CreateContainerIfMissing().ok());

  constexpr int kThreads = 6;
  constexpr int kFilesPerThread = 4;
  constexpr size_t kBlock = 64 * 1024;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int f = 0; f < kFilesPerThread; ++f) {
        const std::string name = "t" + std::to_string(t) + "/file " + std::to_string(f);
        Status s;
        if (f % 2 == 0) {
          s = client.PutBlob(name, Body::FromFile(fd, 0, data.size()), Md5::Of(data), {});
        } else {
          std::vector<std::string> ids;
          for (size_t off = 0; off < data.size() && s.ok(); off += kBlock) {
            const size_t len = std::min(kBlock, data.size() - off);
            ids.push_back("blk-" + std::to_string(100000 + off / kBlock));
            s = client.PutBlock(name, ids.back(), Body::FromFile(fd, off, len),
                                Md5::Of(std::string_view(data).substr(off, len)));
          }
          BlobProperties props;
          props.content_md5 = Md5::Of(data);
          if (s.ok()) s = client.PutBlockList(name, ids, props);
        }
        if (!s.ok()) {
          ADD_FAILURE() << name << ": " << s.ToString();
          ++failures;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  ::close(fd);
  ASSERT_EQ(failures, 0);
  EXPECT_EQ(retries, 0);
  for (int t = 0; t < kThreads; ++t) {
    for (int f = 0; f < kFilesPerThread; ++f) {
      const std::string name = "t" + std::to_string(t) + "/file " + std::to_string(f);
      // Every blob's bytes: a block list's Content-MD5 is the one this test sent, which the
      // emulator does not check against the blocks.
      auto got = client.GetBlob(name);
      ASSERT_TRUE(got.ok()) << name << ": " << got.status().ToString();
      EXPECT_TRUE(*got == data) << name;
    }
  }
}

}  // namespace
}  // namespace nbu::azure
