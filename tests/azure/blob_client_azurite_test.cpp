// BlobClient against a real Azurite: names that need encoding, block uploads streamed from a
// file, properties, idempotent commits, SAS and Shared Key authorization.
#include "azurite_test_util.h"
#include "support/fault_proxy.h"
#include "util/crc64.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <vector>

namespace nbu::azure {
namespace {

using nbu::test::Azurite;
using nbu::test::FreshContainer;
using nbu::test::kAzuriteAccount;
using nbu::test::kAzuriteKey;
using nbu::test::PatternBytes;
using nbu::test::SharedAzurite;
using nbu::test::TempDir;

class BlobClientAzuriteTest : public ::testing::Test {
 protected:
  std::unique_ptr<BlobClient> SharedKeyClient(const std::string& container,
                                              const std::string& key = kAzuriteKey) {
    auto cred = SharedKeyCredential::Create(kAzuriteAccount, key);
    EXPECT_TRUE(cred.ok());
    return std::make_unique<BlobClient>(test::AzuriteOptions(azurite_, container), *cred,
                                        transport_, RealClock::Instance(), observer_);
  }

  Azurite& azurite_ = SharedAzurite();  // one for the suite
  std::shared_ptr<HttpTransport> transport_ = std::make_shared<HttpTransport>();
  std::atomic<int> retries_{0};
  BlobClientObserver observer_{[this](const std::string&) { ++retries_; }, {}, {}, {}, {}};
};

TEST_F(BlobClientAzuriteTest, CreateContainerTwiceIsFine) {
  auto client = SharedKeyClient(FreshContainer("twice"));
  ASSERT_TRUE(client->CreateContainerIfMissing().ok());
  Status again = client->CreateContainerIfMissing();
  EXPECT_TRUE(again.ok()) << again.ToString();
}

TEST_F(BlobClientAzuriteTest, WritesRecreateAMissingContainerReadsDoNot) {
  auto client = SharedKeyClient(FreshContainer("vanished"));
  // Reads report the missing container as not found and leave it missing.
  for (int i = 0; i < 2; ++i) {
    auto none = client->GetBlob("x");
    ASSERT_FALSE(none.ok());
    EXPECT_EQ(none.status().kind(), ErrorKind::kNotFound);
    EXPECT_NE(none.status().message().find("ContainerNotFound"), std::string::npos)
        << none.status().ToString();
  }
  // A write finds it missing, recreates it and goes through.
  const std::string data = "after the container came back";
  Status put = client->PutBlob("x", Body::FromMemory(data), Md5::Of(data), {});
  ASSERT_TRUE(put.ok()) << put.ToString();
  EXPECT_EQ(*client->GetBlob("x"), data);
  Status block = client->PutBlock("y", "0001", Body::FromMemory(data), Md5::Of(data));
  EXPECT_TRUE(block.ok()) << block.ToString();
}

TEST_F(BlobClientAzuriteTest, ConnectionStringClient) {
  auto info = ParseConnectionString(azurite_.ConnectionString());
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  auto cred = MakeCredential(*info);
  ASSERT_TRUE(cred.ok());
  BlobClientOptions o;
  o.endpoint = info->endpoint;
  o.account = info->account;
  o.container = FreshContainer("connstr");
  BlobClient client(o, *cred, transport_, RealClock::Instance());
  ASSERT_TRUE(client.CreateContainerIfMissing().ok());
  const std::string data = "from a connection string";
  Status s = client.PutBlob("cs.txt", Body::FromMemory(data), Md5::Of(data), {});
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(*client.GetBlob("cs.txt"), data);
}

TEST_F(BlobClientAzuriteTest, OddNamesRoundTripWithProperties) {
  auto client = SharedKeyClient(FreshContainer("names"));
  ASSERT_TRUE(client->CreateContainerIfMissing().ok());
  const std::vector<std::string> names = {
      "with space.txt",   "unicode-\xE6\x97\xA5\xE6\x9C\xAC-caf\xC3\xA9.bin",
      "percent%41%.txt",  "hash#tag",
      "semi;colon",       "plus+sign",
      "amp&ersand",       "quote'single",
      "dq\"double",       "eq=als==",
      "a/b/c/nested.txt", "question?mark",
      "paren(1)~*!$,@:",  "tab\tand  two spaces"};
  int seed = 1;
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    const std::string data =
        PatternBytes(1000 + static_cast<size_t>(seed) * 7, static_cast<uint32_t>(seed));
    ++seed;
    BlobProperties props;
    props.content_type = "application/octet-stream";
    props.metadata = {{"source", "nfs"}, {"sha256", Sha256Hex(data)}};
    Status s = client->PutBlob(name, Body::FromMemory(data), Md5::Of(data), props);
    ASSERT_TRUE(s.ok()) << s.ToString();
    auto got = client->GetBlob(name);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, data);
    auto info = client->GetProperties(name);
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    ASSERT_TRUE(info->has_value());
    EXPECT_EQ((*info)->size, data.size());
    ASSERT_TRUE((*info)->content_md5.has_value());
    EXPECT_EQ(*(*info)->content_md5, Md5::Of(data));
    EXPECT_EQ((*info)->metadata["source"], "nfs");
    EXPECT_EQ((*info)->metadata["sha256"], Sha256Hex(data));
    EXPECT_FALSE((*info)->etag.empty());
  }
  // Storage's own listing names each blob as it holds it: a name encoded wrongly on the way
  // would be read back through the same wrong URL above, and show up only here.
  auto listed = client->ListBlobNames("");
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  auto expected = names;
  std::sort(expected.begin(), expected.end());
  std::sort(listed->begin(), listed->end());
  EXPECT_EQ(*listed, expected);
  EXPECT_EQ(retries_, 0);
}

// Every page is read, only names under the prefix come back, and what XML escapes in a name is
// decoded. (A name XML cannot carry, with a control character: BlobClientRetryTest, since
// Azurite 3.37 answers a listing that holds one with 500.)
TEST_F(BlobClientAzuriteTest, ListBlobNamesReadsEveryPageUnderThePrefix) {
  auto client = SharedKeyClient(FreshContainer("list"));
  ASSERT_TRUE(client->CreateContainerIfMissing().ok());
  std::vector<std::string> under = {"p/a&b<c>d", "p/q\"uote'", "p/caf\xC3\xA9", "p/x/y/z",
                                    "p/%2F%41"};
  for (int i = 0; i < 8; ++i) under.push_back("p/n" + std::to_string(i));
  for (const std::string& name : under) {
    ASSERT_TRUE(client->PutBlob(name, Body::FromMemory("x"), Md5::Of("x"), {}).ok()) << name;
  }
  for (const std::string name : {"q/other", "pp", "P/upper"}) {
    ASSERT_TRUE(client->PutBlob(name, Body::FromMemory("x"), Md5::Of("x"), {}).ok()) << name;
  }
  auto listed = client->ListBlobNames("p/", 4);  // 13 names: four pages
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  std::sort(under.begin(), under.end());
  EXPECT_EQ(*listed, under);  // storage lists in name order
  auto all = client->ListBlobNames("");
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(all->size(), under.size() + 3);
  auto none = client->ListBlobNames("nothing/");
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_TRUE(none->empty());
}

TEST_F(BlobClientAzuriteTest, MultiBlockUploadStreamedFromFile) {
  auto client = SharedKeyClient(FreshContainer("blocks"));
  ASSERT_TRUE(client->CreateContainerIfMissing().ok());
  TempDir dir;
  const size_t kBlock = 256 * 1024;
  const std::string data = PatternBytes(3 * kBlock + 12345, 42);
  nbu::test::WriteFile(dir / "src.bin", data);
  const int fd = ::open((dir / "src.bin").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const std::string blob = "dir/multi block+file.bin";

  std::vector<std::string> ids;
  for (size_t off = 0, i = 1; off < data.size(); off += kBlock, ++i) {
    const size_t len = std::min(kBlock, data.size() - off);
    char id[32];
    std::snprintf(id, sizeof id, "00000000-%06zu", i);
    ids.emplace_back(id);
    Status s = client->PutBlock(blob, id, Body::FromFile(fd, off, len),
                                Md5::Of(std::string_view(data).substr(off, len)));
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  ::close(fd);

  auto pending = client->GetUncommittedBlocks(blob);
  ASSERT_TRUE(pending.ok()) << pending.status().ToString();
  ASSERT_EQ(pending->size(), ids.size());
  uint64_t total = 0;
  for (const BlockInfo& b : *pending) {
    EXPECT_NE(std::find(ids.begin(), ids.end(), b.id), ids.end()) << b.id;
    total += b.size;
  }
  EXPECT_EQ(total, data.size());
  EXPECT_FALSE(client->GetProperties(blob)->has_value());  // nothing committed yet

  BlobProperties props;
  props.content_md5 = Md5::Of(data);
  props.content_type = "application/x-test";
  props.metadata = {{"origin", "unit test"}};
  Status s = client->PutBlockList(blob, ids, props);
  ASSERT_TRUE(s.ok()) << s.ToString();
  // Replaying the same commit (e.g. after a lost response) succeeds: <Latest> finds committed ids.
  s = client->PutBlockList(blob, ids, props);
  ASSERT_TRUE(s.ok()) << s.ToString();

  auto info = client->GetProperties(blob);
  ASSERT_TRUE(info.ok() && info->has_value());
  EXPECT_EQ((*info)->size, data.size());
  ASSERT_TRUE((*info)->content_md5.has_value());
  EXPECT_EQ(*(*info)->content_md5, Md5::Of(data));
  EXPECT_EQ((*info)->metadata["origin"], "unit test");
  EXPECT_EQ(*client->GetBlob(blob), data);
  auto after = client->GetUncommittedBlocks(blob);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->empty());
}

TEST_F(BlobClientAzuriteTest, ZeroByteBlobs) {
  auto client = SharedKeyClient(FreshContainer("empty"));
  ASSERT_TRUE(client->CreateContainerIfMissing().ok());
  Status s = client->PutBlob("empty.txt", Body::FromMemory(""), Md5::Of(""), {});
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto info = client->GetProperties("empty.txt");
  ASSERT_TRUE(info.ok() && info->has_value());
  EXPECT_EQ((*info)->size, 0u);
  EXPECT_EQ(*(*info)->content_md5, Md5::Of(""));
  EXPECT_EQ(*client->GetBlob("empty.txt"), "");

  // Empty file from an fd, and an empty block list commit.
  TempDir dir;
  nbu::test::WriteFile(dir / "zero", "");
  const int fd = ::open((dir / "zero").c_str(), O_RDONLY | O_CLOEXEC);
  s = client->PutBlob("empty-fd", Body::FromFile(fd, 0, 0), Md5::Of(""), {});
  ::close(fd);
  ASSERT_TRUE(s.ok()) << s.ToString();
  BlobProperties props;
  props.content_md5 = Md5::Of("");
  s = client->PutBlockList("empty-commit", {}, props);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ((*client->GetProperties("empty-commit"))->size, 0u);
}

TEST_F(BlobClientAzuriteTest, MissingAndDelete) {
  auto client = SharedKeyClient(FreshContainer("delete"));
  ASSERT_TRUE(client->CreateContainerIfMissing().ok());
  auto none = client->GetProperties("nope");
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_FALSE(none->has_value());
  EXPECT_EQ(client->GetBlob("nope").status().kind(), ErrorKind::kNotFound);
  auto no_blocks = client->GetUncommittedBlocks("nope");
  ASSERT_TRUE(no_blocks.ok()) << no_blocks.status().ToString();
  EXPECT_TRUE(no_blocks->empty());
  const std::string data = "bye";
  ASSERT_TRUE(client->PutBlob("gone", Body::FromMemory(data), Md5::Of(data), {}).ok());
  EXPECT_TRUE(client->DeleteBlob("gone").ok());
  EXPECT_FALSE(client->GetProperties("gone")->has_value());
  // Gone already: done, as for a retry of a delete that landed.
  Status again = client->DeleteBlob("gone");
  EXPECT_TRUE(again.ok()) << again.ToString();
  // A body that does not match its MD5 is refused and not resent (the caller re-reads the file:
  // a transient failure of the attempt). The staging copy's safety rests on this check.
  Status bad = client->PutBlob("bad-md5", Body::FromMemory(data), Md5::Of("other"), {});
  EXPECT_EQ(bad.kind(), ErrorKind::kTransient) << bad.ToString();
  Status bad_block =
      client->PutBlock("bad-md5-blocks", "0001", Body::FromMemory(data), Md5::Of("other"));
  EXPECT_EQ(bad_block.kind(), ErrorKind::kTransient) << bad_block.ToString();
  EXPECT_NE(bad_block.message().find("Md5Mismatch"), std::string::npos) << bad_block.ToString();
  EXPECT_EQ(bad.code(), "Md5Mismatch") << bad.ToString();
  EXPECT_NE(bad.message().find("request id"), std::string::npos) << bad.ToString();
  // A commit of the same name by another writer discards the blocks it did not name; a commit
  // naming them fails this attempt (the next one stages them again), it does not condemn the
  // file.
  ASSERT_TRUE(client->PutBlock("discarded", "0001", Body::FromMemory(data), Md5::Of(data)).ok());
  ASSERT_TRUE(client->PutBlock("discarded", "0002", Body::FromMemory(data), Md5::Of(data)).ok());
  ASSERT_TRUE(client->PutBlockList("discarded", {"0002"}, {}).ok());
  Status stale = client->PutBlockList("discarded", {"0001"}, {});
  EXPECT_EQ(stale.kind(), ErrorKind::kTransient) << stale.ToString();
  EXPECT_EQ(stale.code(), "InvalidBlockList") << stale.ToString();
  // Block ids of a different length than the staged ones are rejected (fixed width matters).
  ASSERT_TRUE(client->PutBlock("ids", "0001", Body::FromMemory(data), Md5::Of(data)).ok());
  EXPECT_EQ(client->PutBlock("ids", "00002", Body::FromMemory(data), Md5::Of(data)).kind(),
            ErrorKind::kPermanent);
  EXPECT_EQ(retries_, 0);
}

// Writes on conditions: only while the name is free, or only while the blob is at an ETag.
// A failed condition changes nothing and is kConflict, for Put Blob and Put Block List alike.
TEST_F(BlobClientAzuriteTest, ConditionalWrites) {
  auto client = SharedKeyClient(FreshContainer("cond"));
  ASSERT_TRUE(client->CreateContainerIfMissing().ok());
  BlobProperties absent;
  absent.if_absent = true;
  ASSERT_TRUE(client->PutBlob("b", Body::FromMemory("one"), Md5::Of("one"), absent).ok());
  Status again = client->PutBlob("b", Body::FromMemory("two"), Md5::Of("two"), absent);
  EXPECT_EQ(again.kind(), ErrorKind::kConflict) << again.ToString();
  EXPECT_EQ(*client->GetBlob("b"), "one");

  const std::string etag = (*client->GetProperties("b"))->etag;
  ASSERT_FALSE(etag.empty());
  BlobProperties at;
  at.if_match = etag;
  ASSERT_TRUE(client->PutBlob("b", Body::FromMemory("two"), Md5::Of("two"), at).ok());
  EXPECT_EQ(*client->GetBlob("b"), "two");
  Status stale = client->PutBlob("b", Body::FromMemory("three"), Md5::Of("three"), at);
  EXPECT_EQ(stale.kind(), ErrorKind::kConflict) << stale.ToString();
  EXPECT_EQ(*client->GetBlob("b"), "two");

  ASSERT_TRUE(client->PutBlock("b", "0001", Body::FromMemory("four"), Md5::Of("four")).ok());
  Status list_absent = client->PutBlockList("b", {"0001"}, absent);
  EXPECT_EQ(list_absent.kind(), ErrorKind::kConflict) << list_absent.ToString();
  Status list_stale = client->PutBlockList("b", {"0001"}, at);
  EXPECT_EQ(list_stale.kind(), ErrorKind::kConflict) << list_stale.ToString();
  EXPECT_EQ(*client->GetBlob("b"), "two");
  at.if_match = (*client->GetProperties("b"))->etag;
  ASSERT_TRUE(client->PutBlockList("b", {"0001"}, at).ok());
  EXPECT_EQ(*client->GetBlob("b"), "four");
  EXPECT_EQ(retries_, 0);
}

// A Put Blob checked by CRC-64: Azurite (3.37 on) checks x-ms-content-crc64, refuses a body
// that does not match it, and stores the MD5 it computes of the body it took. The start-up
// probe sees that it checks the header, and leaves nothing behind.
TEST_F(BlobClientAzuriteTest, PutBlobCheckedByCrc64StoresTheServiceMd5) {
  auto client = SharedKeyClient(FreshContainer("crc64"));
  ASSERT_TRUE(client->CreateContainerIfMissing().ok());
  std::string data(300'000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + i / 251);
  Status s = client->PutBlob("crc.bin", Body::FromMemory(data),
                             BodyCheck::Crc64(Crc64(0, data.data(), data.size())), {});
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto info = client->GetProperties("crc.bin");
  ASSERT_TRUE(info.ok() && info->has_value()) << info.status().ToString();
  EXPECT_EQ((*info)->size, data.size());
  ASSERT_TRUE((*info)->content_md5.has_value());
  EXPECT_EQ(*(*info)->content_md5, Md5::Of(data));
  EXPECT_EQ(*client->GetBlob("crc.bin"), data);

  // One bit off: refused as a transient failure of the attempt (the file is read again), and
  // nothing is stored.
  Status bad = client->PutBlob("bad-crc.bin", Body::FromMemory(data),
                               BodyCheck::Crc64(Crc64(0, data.data(), data.size()) ^ 1), {});
  EXPECT_EQ(bad.kind(), ErrorKind::kTransient) << bad.ToString();
  EXPECT_NE(bad.message().find("Crc64Mismatch"), std::string::npos) << bad.ToString();
  EXPECT_FALSE(client->GetProperties("bad-crc.bin")->has_value());

  auto checks = client->ChecksCrc64(".nbu-probe/crc64-test");
  ASSERT_TRUE(checks.ok()) << checks.status().ToString();
  EXPECT_TRUE(*checks);
  EXPECT_FALSE(client->GetProperties(".nbu-probe/crc64-test")->has_value());
}

TEST_F(BlobClientAzuriteTest, SasCredential) {
  const std::string container = FreshContainer("sas");
  BlobClient client(test::AzuriteOptions(azurite_, container),
                    std::make_shared<SasCredential>(
                        "?" + test::MakeAccountSas(kAzuriteAccount, kAzuriteKey, "racwdl")),
                    transport_, RealClock::Instance());
  Status s = client.CreateContainerIfMissing();
  ASSERT_TRUE(s.ok()) << s.ToString();
  const std::string data = "sas upload";
  s = client.PutBlob("sas blob+1.txt", Body::FromMemory(data), Md5::Of(data), {});
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(client.PutBlock("sas-blocks", "b1", Body::FromMemory(data), Md5::Of(data)).ok());
  ASSERT_TRUE(client.PutBlockList("sas-blocks", {"b1"}, {}).ok());
  EXPECT_EQ(*client.GetBlob("sas blob+1.txt"), data);
  EXPECT_EQ(*client.GetBlob("sas-blocks"), data);

  // Read-only SAS: writes are refused with kAuth, and the signature is not in the message.
  const std::string ro_token = test::MakeAccountSas(kAzuriteAccount, kAzuriteKey, "rl");
  BlobClient ro(test::AzuriteOptions(azurite_, container),
                std::make_shared<SasCredential>(ro_token), transport_, RealClock::Instance());
  EXPECT_EQ(*ro.GetBlob("sas-blocks"), data);
  Status denied = ro.PutBlob("nope", Body::FromMemory(data), Md5::Of(data), {});
  EXPECT_EQ(denied.kind(), ErrorKind::kAuth) << denied.ToString();
  const std::string sig = ro_token.substr(ro_token.find("sig=") + 4);
  EXPECT_EQ(denied.message().find(sig), std::string::npos);
  EXPECT_EQ(denied.message().find("sig="), std::string::npos);
}

// A container SAS (or a role assigned on the container) may use the container but not create
// it: storage answers Create Container 403. That is not a refusal of the credentials when the
// container exists; when it does not, the error says so.
TEST_F(BlobClientAzuriteTest, ContainerSasUsesAContainerItCannotCreate) {
  const std::string container = FreshContainer("csas");
  ASSERT_TRUE(SharedKeyClient(container)->CreateContainerIfMissing().ok());
  // What the tries tell the status: the refused create is expected, not a refusal of these
  // credentials (else the status would say storage_refuses_credentials after every start).
  std::vector<TryOutcome> tries;
  BlobClientObserver observer;
  observer.on_try = [&](TryOutcome t) { tries.push_back(t); };
  BlobClient client(test::AzuriteOptions(azurite_, container),
                    std::make_shared<SasCredential>(
                        test::MakeContainerSas(kAzuriteAccount, kAzuriteKey, container, "racwl")),
                    transport_, RealClock::Instance(), observer);
  Status s = client.CreateContainerIfMissing();
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(std::count(tries.begin(), tries.end(), TryOutcome::kRefused), 0);
  const std::string data = "container sas";
  ASSERT_TRUE(client.PutBlob("c.txt", Body::FromMemory(data), Md5::Of(data), {}).ok());
  EXPECT_EQ(*client.GetBlob("c.txt"), data);

  const std::string missing = FreshContainer("csas-missing");
  const std::string token = test::MakeContainerSas(kAzuriteAccount, kAzuriteKey, missing, "racwl");
  BlobClient absent(test::AzuriteOptions(azurite_, missing), std::make_shared<SasCredential>(token),
                    transport_, RealClock::Instance());
  s = absent.CreateContainerIfMissing();
  EXPECT_EQ(s.kind(), ErrorKind::kAuth) << s.ToString();
  EXPECT_NE(s.message().find("may not exist"), std::string::npos) << s.ToString();
  EXPECT_EQ(s.message().find(token.substr(token.find("sig=") + 4)), std::string::npos);

  // Credentials refused outright stay refused: a container SAS signed with another key.
  tries.clear();
  BlobClient forged(test::AzuriteOptions(azurite_, container),
                    std::make_shared<SasCredential>(test::MakeContainerSas(
                        kAzuriteAccount, Base64Encode(std::string(64, 'k')), container, "racwl")),
                    transport_, RealClock::Instance(), observer);
  s = forged.CreateContainerIfMissing();
  EXPECT_EQ(s.kind(), ErrorKind::kAuth) << s.ToString();
  EXPECT_EQ(std::count(tries.begin(), tries.end(), TryOutcome::kRefused), 1) << "the check's 403";
  EXPECT_EQ(s.message().find("may not exist"), std::string::npos) << s.ToString();
}

// Only BlobNotFound shows the container is there: a 404 without that code (a wrong path, a
// proxy's own answer) leaves the refused create as it was.
TEST_F(BlobClientAzuriteTest, ARefusedCreateIsNotExcusedByABare404) {
  nbu::test::FaultProxy proxy(azurite_.port(), [](const nbu::test::ProxyRequest& r) {
    if (r.method == "PUT") return nbu::test::FaultAction::Status(403, "AuthorizationFailure");
    return nbu::test::FaultAction::Status(404, "");
  });
  BlobClientOptions o = test::AzuriteOptions(azurite_, FreshContainer("bare404"));
  o.endpoint = "http://127.0.0.1:" + std::to_string(proxy.port()) + "/" + kAzuriteAccount;
  auto cred = SharedKeyCredential::Create(kAzuriteAccount, kAzuriteKey);
  ASSERT_TRUE(cred.ok());
  BlobClient client(o, *cred, transport_, RealClock::Instance());
  Status s = client.CreateContainerIfMissing();
  EXPECT_EQ(s.kind(), ErrorKind::kAuth) << s.ToString();
  EXPECT_EQ(proxy.Count("container-check", "HEAD"), 1u);
}

// A delete that landed but whose answer was lost is retried and finds the blob gone: that is the
// delete done (a start-up probe's, which would otherwise warn it could not be deleted). A bare
// 404 is not.
TEST_F(BlobClientAzuriteTest, ADeleteWhoseAnswerWasLostIsDone) {
  std::atomic<int> deletes{0};
  nbu::test::FaultProxy proxy(azurite_.port(), [&](const nbu::test::ProxyRequest& r) {
    if (r.method == "DELETE" && deletes++ == 0) return nbu::test::FaultAction::DropAfter();
    return nbu::test::FaultAction::Forward();
  });
  BlobClientOptions o = test::AzuriteOptions(azurite_, FreshContainer("lostdelete"));
  o.endpoint = "http://127.0.0.1:" + std::to_string(proxy.port()) + "/" + kAzuriteAccount;
  auto cred = SharedKeyCredential::Create(kAzuriteAccount, kAzuriteKey);
  ASSERT_TRUE(cred.ok());
  BlobClient client(o, *cred, transport_, RealClock::Instance());
  ASSERT_TRUE(client.CreateContainerIfMissing().ok());
  ASSERT_TRUE(client.PutBlob("probe", Body::FromMemory("p"), Md5::Of("p"), {}).ok());
  const Status s = client.DeleteBlob("probe");
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(deletes.load(), 2) << "the first answer lost, the retry's 404";
  EXPECT_FALSE(client.GetProperties("probe")->has_value());
  nbu::test::FaultProxy bare(azurite_.port(), [](const nbu::test::ProxyRequest&) {
    return nbu::test::FaultAction::Status(404, "");
  });
  o.endpoint = "http://127.0.0.1:" + std::to_string(bare.port()) + "/" + kAzuriteAccount;
  BlobClient wrong(o, *cred, transport_, RealClock::Instance());
  EXPECT_EQ(wrong.DeleteBlob("probe").kind(), ErrorKind::kNotFound);
}

// Block IDs of one blob must all have one length: another writer's uncommitted blocks with IDs
// of another length make every Put Block fail until they go. The error says what the operator
// can do, since no retry helps.
TEST_F(BlobClientAzuriteTest, ForeignUncommittedBlocksAreExplained) {
  auto client = SharedKeyClient(FreshContainer("foreign"));
  ASSERT_TRUE(client->CreateContainerIfMissing().ok());
  const std::string data = "block";
  ASSERT_TRUE(client->PutBlock("f.bin", "short", Body::FromMemory(data), Md5::Of(data)).ok());
  Status s = client->PutBlock("f.bin", "a-much-longer-id", Body::FromMemory(data), Md5::Of(data));
  EXPECT_EQ(s.kind(), ErrorKind::kPermanent) << s.ToString();
  EXPECT_NE(s.message().find("InvalidBlobOrBlock"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("likely another writer's uncommitted blocks"), std::string::npos)
      << s.ToString();
}

TEST_F(BlobClientAzuriteTest, WrongKeyIsAuthErrorWithoutSecrets) {
  const std::string wrong_key = Base64Encode(std::string(64, 'k'));
  auto client = SharedKeyClient(FreshContainer("wrongkey"), wrong_key);
  Status s = client->CreateContainerIfMissing();
  EXPECT_EQ(s.kind(), ErrorKind::kAuth) << s.ToString();
  EXPECT_NE(s.message().find("HTTP 403"), std::string::npos) << s.ToString();
  EXPECT_EQ(s.message().find(wrong_key), std::string::npos);
  EXPECT_EQ(s.message().find(kAzuriteKey), std::string::npos);
  EXPECT_EQ(s.message().find("SharedKey"), std::string::npos);
  EXPECT_EQ(retries_, 0);
}

// The tests' own Azurite counts as started once it says it listens, not once its port accepts
// a connection: another test process's Azurite on that port would pass for it while it exits
// with EADDRINUSE, and two processes' tests would share one emulator.
TEST_F(BlobClientAzuriteTest, AnAzuriteWhosePortIsTakenIsNotTakenForStarted) {
  nbu::test::AzuriteOptions taken;
  taken.port = azurite_.port();
  try {
    nbu::test::Azurite second(taken);
    ADD_FAILURE() << "started on a port another Azurite holds";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("EADDRINUSE"), std::string::npos) << e.what();
  }
}

TEST_F(BlobClientAzuriteTest, SurvivesServerRestartOnPooledConnection) {
  const std::string container = FreshContainer("restart");
  auto client = SharedKeyClient(container);
  ASSERT_TRUE(client->CreateContainerIfMissing().ok());
  TempDir dir;
  const std::string data = PatternBytes(100000, 7);
  nbu::test::WriteFile(dir / "f", data);
  const int fd = ::open((dir / "f").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_TRUE(client
                  ->PutBlock("r", "01", Body::FromFile(fd, 0, 50000),
                             Md5::Of(std::string_view(data).substr(0, 50000)))
                  .ok());
  // The pooled keep-alive connection dies with the server; in-memory data is gone as well.
  azurite_.Stop();
  azurite_.Start();
  ASSERT_TRUE(client->CreateContainerIfMissing().ok());
  Status s = client->PutBlock("r", "02", Body::FromFile(fd, 50000, 50000),
                              Md5::Of(std::string_view(data).substr(50000)));
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(client
                  ->PutBlock("r", "01", Body::FromFile(fd, 0, 50000),
                             Md5::Of(std::string_view(data).substr(0, 50000)))
                  .ok());
  ::close(fd);
  ASSERT_TRUE(client->PutBlockList("r", {"01", "02"}, {}).ok());
  EXPECT_EQ(*client->GetBlob("r"), data);
}

}  // namespace
}  // namespace nbu::azure
