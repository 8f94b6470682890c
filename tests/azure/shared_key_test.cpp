#include "azure/shared_key.h"

#include "util/crypto.h"

#include <gtest/gtest.h>

namespace nbu::azure {
namespace {

constexpr const char* kKey =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
// 2026-03-02T10:00:00Z
const WallTime kWhen = WallTime(std::chrono::seconds(1772445600));

HttpRequest PutBlockRequest() {
  HttpRequest req;
  req.method = "PUT";
  // Raw block id "0000000001" -> base64 "MDAwMDAwMDAwMQ==" -> '=' percent-encoded on the wire.
  req.url =
      "http://127.0.0.1:10000/devstoreaccount1/mycontainer/dir/my%20blob.txt"
      "?comp=block&blockid=MDAwMDAwMDAwMQ%3D%3D";
  req.body = "hello";
  req.SetHeader("x-ms-version", "2025-11-05");
  req.SetHeader("Content-MD5", Base64Encode(Md5::Of("hello")));
  req.SetHeader("x-ms-client-request-id", "0190aaaa-0000-7000-8000-000000000001");
  req.SetHeader("x-ms-date", "Mon, 02 Mar 2026 10:00:00 GMT");
  return req;
}

// The layout below was written by hand from AZURE.md §5; the signature was computed
// independently with:
//   printf '<the string below>' > sts.txt
//   openssl dgst -sha256 -mac HMAC -macopt hexkey:$(echo -n "$KEY" | base64 -d | xxd -p -c 100)
//     -binary sts.txt | base64   (one command line)
constexpr const char* kPutBlockStringToSign =
    "PUT\n"
    "\n"                          // Content-Encoding
    "\n"                          // Content-Language
    "5\n"                         // Content-Length
    "XUFAKrxLKna5cZ2REBfFkg==\n"  // Content-MD5 of "hello"
    "\n"                          // Content-Type
    "\n"                          // Date (x-ms-date is used)
    "\n\n\n\n\n"                  // If-* and Range
    "x-ms-client-request-id:0190aaaa-0000-7000-8000-000000000001\n"
    "x-ms-date:Mon, 02 Mar 2026 10:00:00 GMT\n"
    "x-ms-version:2025-11-05\n"
    "/devstoreaccount1/devstoreaccount1/mycontainer/dir/my%20blob.txt\n"  // account twice
    "blockid:MDAwMDAwMDAwMQ==\n"                                          // decoded value
    "comp:block";
constexpr const char* kPutBlockSignature = "8pC8fUN6T9Nt6DLtejaifIZfKJlQ6dgl0yIXFu80dYo=";

TEST(SharedKeyTest, PutBlockStringToSignOnPathStyleUrl) {
  EXPECT_EQ(SharedKeyStringToSign(PutBlockRequest(), "devstoreaccount1"), kPutBlockStringToSign);
}

TEST(SharedKeyTest, SignatureMatchesOpensslVector) {
  EXPECT_EQ(SharedKeySignature(HmacSha256Key(*Base64Decode(kKey)), kPutBlockStringToSign),
            kPutBlockSignature);
}

TEST(SharedKeyTest, HostStyleGetWithSortedQueryAndEmptyLength) {
  HttpRequest req;
  req.method = "GET";
  req.url = "https://myaccount.blob.core.windows.net/mycontainer?restype=container&comp=list";
  req.SetHeader("x-ms-version", "2025-11-05");
  req.SetHeader("x-ms-date", "Mon, 02 Mar 2026 10:00:00 GMT");
  const std::string sts = SharedKeyStringToSign(req, "myaccount");
  EXPECT_EQ(sts,
            "GET\n\n\n\n\n\n\n\n\n\n\n\n"
            "x-ms-date:Mon, 02 Mar 2026 10:00:00 GMT\n"
            "x-ms-version:2025-11-05\n"
            "/myaccount/mycontainer\ncomp:list\nrestype:container");
  // openssl dgst -sha256 -mac HMAC (same key) over the string above.
  EXPECT_EQ(SharedKeySignature(HmacSha256Key(*Base64Decode(kKey)), sts),
            "A/rnewnmxFFnSl/pfm24ocKzlV8g3zif4cAQEIuMeUw=");
}

TEST(SharedKeyTest, ZeroLengthPutHasEmptyContentLengthAndMetadataSorted) {
  HttpRequest req;
  req.method = "PUT";
  req.url = "http://h/acct/c/b";
  req.SetHeader("x-ms-meta-zeta", "1");
  req.SetHeader("X-MS-Meta-Alpha", "a  b ");  // lower-cased, whitespace collapsed and trimmed
  req.SetHeader("x-ms-blob-type", "BlockBlob");
  req.SetHeader("Content-Type", "text/plain");
  const std::string sts = SharedKeyStringToSign(req, "acct");
  EXPECT_EQ(sts,
            "PUT\n\n\n\n\ntext/plain\n\n\n\n\n\n\n"
            "x-ms-blob-type:BlockBlob\nx-ms-meta-alpha:a b\nx-ms-meta-zeta:1\n"
            "/acct/acct/c/b");
}

TEST(SharedKeyTest, MultiValuedQuerySortedAndJoined) {
  HttpRequest req;
  req.method = "GET";
  req.url = "https://a.blob.core.windows.net/c?Include=metadata&include=copy&comp=list";
  EXPECT_EQ(SharedKeyStringToSign(req, "a"),
            "GET\n\n\n\n\n\n\n\n\n\n\n\n/a/c\ncomp:list\ninclude:copy,metadata");
}

TEST(SharedKeyTest, AuthorizeSetsFreshDateAndHeader) {
  SimulatedClock clock(true, kWhen);
  auto cred = SharedKeyCredential::Create("devstoreaccount1", kKey, clock);
  ASSERT_TRUE(cred.ok());
  HttpRequest req = PutBlockRequest();
  req.SetHeader("x-ms-date", "stale");
  ASSERT_TRUE((*cred)->Authorize(req, "devstoreaccount1", true).ok());
  EXPECT_EQ(*req.FindHeader("x-ms-date"), "Mon, 02 Mar 2026 10:00:00 GMT");
  EXPECT_EQ(*req.FindHeader("Authorization"),
            std::string("SharedKey devstoreaccount1:") + kPutBlockSignature);
  // Re-authorizing (a retry) replaces rather than duplicates the headers.
  clock.Advance(std::chrono::seconds(61));
  ASSERT_TRUE((*cred)->Authorize(req, "devstoreaccount1", true).ok());
  EXPECT_EQ(*req.FindHeader("x-ms-date"), "Mon, 02 Mar 2026 10:01:01 GMT");
  int auth_headers = 0;
  for (const auto& h : req.headers) auth_headers += h.first == "Authorization" ? 1 : 0;
  EXPECT_EQ(auth_headers, 1);
  EXPECT_NE(*req.FindHeader("Authorization"),
            std::string("SharedKey devstoreaccount1:") + kPutBlockSignature);
  EXPECT_EQ((*cred)->Describe().find("Eby8"), std::string::npos);
}

TEST(SharedKeyTest, BadKeyIsAuthErrorWithoutKey) {
  auto cred = SharedKeyCredential::Create("acct", "s3cr3t!!");
  ASSERT_FALSE(cred.ok());
  EXPECT_EQ(cred.status().kind(), ErrorKind::kAuth);
  EXPECT_EQ(cred.status().message().find("s3cr3t"), std::string::npos);
}

TEST(SharedKeyTest, Rfc1123) {
  EXPECT_EQ(FormatRfc1123(WallTime(std::chrono::seconds(784111777))),
            "Sun, 06 Nov 1994 08:49:37 GMT");
}

}  // namespace
}  // namespace nbu::azure
