#include "azure/connection_string.h"

#include "azure/sas.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace nbu::azure {
namespace {

constexpr const char* kKey =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

TEST(ConnectionStringTest, AzuriteStyle) {
  const std::string cs =
      std::string("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;") +
      "AccountKey=" + kKey + ";BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/;";
  auto r = ParseConnectionString(cs);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->endpoint, "http://127.0.0.1:10000/devstoreaccount1");
  EXPECT_EQ(r->account, "devstoreaccount1");
  EXPECT_EQ(r->kind, CredentialKind::kSharedKey);
  EXPECT_EQ(r->account_key, kKey);  // the '=' padding survives the split at the first '='
  auto cred = MakeCredential(*r);
  ASSERT_TRUE(cred.ok());
  EXPECT_EQ((*cred)->Describe(), "shared-key(account=devstoreaccount1)");
}

TEST(ConnectionStringTest, DefaultsBuildAzureEndpoint) {
  auto r = ParseConnectionString(std::string("AccountName=acct;AccountKey=") + kKey);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->endpoint, "https://acct.blob.core.windows.net");
  r = ParseConnectionString(std::string("DefaultEndpointsProtocol=http;AccountName=acct;") +
                            "EndpointSuffix=core.chinacloudapi.cn;AccountKey=" + kKey);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->endpoint, "http://acct.blob.core.chinacloudapi.cn");
}

TEST(ConnectionStringTest, SasOnly) {
  auto r = ParseConnectionString(
      "BlobEndpoint=https://acct.blob.core.windows.net;"
      "SharedAccessSignature=?sv=2021-06-08&ss=b&srt=sco&sp=rwlc&se=2099-01-01T00%3A00%3A00Z"
      "&sig=c2VjcmV0%3D");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->kind, CredentialKind::kSas);
  EXPECT_EQ(r->endpoint, "https://acct.blob.core.windows.net");
  EXPECT_EQ(r->account, "");  // a SAS signs nothing with it, so none is made up from the host
  EXPECT_EQ(r->sas_token.substr(0, 3), "sv=");
  auto cred = MakeCredential(*r);
  ASSERT_TRUE(cred.ok());
  const std::string d = (*cred)->Describe();
  EXPECT_EQ(d.find("c2VjcmV0"), std::string::npos) << d;
  EXPECT_NE(d.find("sp=rwlc"), std::string::npos) << d;

  r = ParseConnectionString(
      "BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;SharedAccessSignature=sv=x&sig=y");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->endpoint, "http://127.0.0.1:1/devstoreaccount1");
  EXPECT_EQ(r->account, "");
}

// A key and a SAS in one string are two credentials: the key used to win silently, though the
// SAS may be the one meant. Refused, naming neither value; an empty field is no credential.
TEST(ConnectionStringTest, KeyAndSasTogetherAreRefused) {
  auto r = ParseConnectionString(
      std::string("AccountName=a;SharedAccessSignature=sv=1&sig=s3cr3t;") + "AccountKey=" + kKey);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().kind(), ErrorKind::kPermanent);
  EXPECT_EQ(r.status().message(),
            "connection string: both AccountKey and SharedAccessSignature are given, so which is "
            "meant cannot be told: remove one");
  r = ParseConnectionString(std::string("AccountName=acct;SharedAccessSignature=;AccountKey=") +
                            kKey);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->kind, CredentialKind::kSharedKey);
  r = ParseConnectionString(
      "BlobEndpoint=https://a.blob.core.windows.net;AccountKey=;"
      "SharedAccessSignature=sv=1&sig=x");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->kind, CredentialKind::kSas);
}

void ExpectError(const std::string& cs, const std::string& field, bool endpoint_elsewhere = false) {
  auto r = ParseConnectionString(cs, endpoint_elsewhere);
  ASSERT_FALSE(r.ok()) << cs;
  EXPECT_EQ(r.status().kind(), ErrorKind::kPermanent);
  EXPECT_NE(r.status().message().find(field), std::string::npos) << r.status().message();
  EXPECT_EQ(r.status().message().find("s3cr3t"), std::string::npos) << r.status().message();
  EXPECT_EQ(r.status().message().find("Eby8vdM02x"), std::string::npos) << r.status().message();
}

TEST(ConnectionStringTest, ErrorsNameTheFieldButNeverTheSecret) {
  ExpectError("AccountName=a;AccountKey=s3cr3t!!not-base64", "AccountKey");
  ExpectError(std::string("AccountKey=") + kKey, "AccountName");
  ExpectError(std::string("DefaultEndpointsProtocol=ftp;AccountName=a;AccountKey=") + kKey,
              "DefaultEndpointsProtocol");
  ExpectError(std::string("AccountName=a;BlobEndpoint=127.0.0.1:10000;AccountKey=") + kKey,
              "BlobEndpoint");
  ExpectError("AccountName=a", "neither AccountKey nor SharedAccessSignature");
  ExpectError("BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature=s3cr3t",
              "SharedAccessSignature has no signature");
  ExpectError(
      "BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature="
      "https://a.blob.core.windows.net/c?sv=1&sig=s3cr3t",
      "SharedAccessSignature is a URL");
  ExpectError("AccountName=a;s3cr3tWithoutEquals", "entry 2");
  ExpectError(std::string("AccountName=a;AccountKey=") + kKey + ";AccountKey=s3cr3t", "twice");
  ExpectError("UseDevelopmentStorage=true", "UseDevelopmentStorage");
}

// Every problem is told, one line each, not only the first: a start-up shows them all.
TEST(ConnectionStringTest, EveryProblemIsToldOnItsOwnLine) {
  const auto problems = [](const std::string& cs, bool endpoint_elsewhere = false) {
    std::vector<std::string> out;
    (void)ParseConnectionString(cs, endpoint_elsewhere, &out);
    for (const std::string& p : out) EXPECT_EQ(p.find("s3cr3t"), std::string::npos) << p;
    return out;
  };
  using Lines = std::vector<std::string>;
  EXPECT_EQ(problems("AccountName=my_acct;AccountKey=s3cr3t*not*base64;EndpointSuffix=a b"),
            (Lines{"connection string: AccountName makes the blob host's name, so it must be "
                   "letters, digits and inner hyphens (at most 63)",
                   "connection string: EndpointSuffix must be a domain name such as "
                   "core.windows.net (a port may follow)",
                   "connection string: AccountKey is not valid base64"}));
  EXPECT_EQ(
      problems("DefaultEndpointsProtocol=ftp;BlobEndpoint=https://h/?x=1;SharedAccessSignature="
               "sp=r&sig=s3cr3t;AccountName=a;AccountName=b"),
      (Lines{"connection string: field AccountName appears twice",
             "connection string: DefaultEndpointsProtocol must be http or https",
             "connection string: BlobEndpoint must not have a query or fragment (a SAS goes "
             "in SharedAccessSignature=)",
             "connection string: SharedAccessSignature does not allow writes (sp=r has no "
             "w)"}));
  EXPECT_EQ(problems(std::string("AccountName=a;AccountName=b;accountname=c;AccountKey=") + kKey),
            (Lines{"connection string: field AccountName appears twice"}));
  // Told once: the missing name, and not a missing credential when an entry was no Key=Value.
  EXPECT_EQ(problems(std::string("AccountKey=") + kKey),
            (Lines{"connection string: AccountName is missing (and no BlobEndpoint given)"}));
  EXPECT_EQ(problems("AccountName=a;AccountKey"),
            (Lines{"connection string: entry 2 is not of the form Key=Value"}));
  EXPECT_EQ(problems("UseDevelopmentStorage=true;AccountKey=x"),
            (Lines{"connection string: UseDevelopmentStorage is not supported; give AccountName, "
                   "AccountKey and BlobEndpoint"}));
  EXPECT_EQ(problems(std::string("AccountName=a;AccountKey=") + kKey), Lines{});
}

// An account name or endpoint suffix that cannot make the blob host's name stops start-up
// instead of failing every request for ever. A name beside an endpoint only signs: an
// emulator's account may be named anything.
TEST(ConnectionStringTest, AccountNameAndEndpointSuffixMustMakeAHost) {
  const std::string key = std::string(";AccountKey=") + kKey;
  const std::string label63(63, 'a');
  for (const std::string& name :
       std::vector<std::string>{"my acct", "acct.evil.example", "-acct", "acct-", "a_b", "a/b",
                                "acct:1", label63 + "a"}) {
    ExpectError("AccountName=" + name + key, "AccountName makes the blob host's name");
  }
  for (const std::string& name :
       std::vector<std::string>{"a", "acct2", "test-account", "DevStore1", label63}) {
    auto r = ParseConnectionString("AccountName=" + name + key);
    ASSERT_TRUE(r.ok()) << name << ": " << r.status().ToString();
    EXPECT_EQ(r->endpoint, "https://" + name + ".blob.core.windows.net");
  }
  auto r = ParseConnectionString("AccountName=dev_store;BlobEndpoint=http://127.0.0.1:1/dev_store" +
                                 key);
  ASSERT_TRUE(r.ok()) << "an emulator's account beside its endpoint: " << r.status().ToString();
  EXPECT_EQ(r->account, "dev_store");
  for (const char* suffix :
       {"https://core.windows.net", "core.windows.net/", ".core.windows.net", "core..windows.net",
        "core.windows.net.", "core.-x.net", "a b.net", "localhost:", "localhost:10000:1",
        "localhost:1x", "localhost:123456"}) {
    ExpectError(std::string("AccountName=acct;EndpointSuffix=") + suffix + key,
                "EndpointSuffix must be a domain name");
  }
  for (const char* suffix :
       {"core.usgovcloudapi.net", "local.azurestack.external", "localhost", "localhost:10000"}) {
    r = ParseConnectionString(std::string("AccountName=acct;EndpointSuffix=") + suffix + key);
    ASSERT_TRUE(r.ok()) << suffix << ": " << r.status().ToString();
    EXPECT_EQ(r->endpoint, std::string("https://acct.blob.") + suffix);
  }
  // No AccountName beside a custom domain's endpoint and a SAS: nothing needs one.
  r = ParseConnectionString(
      "BlobEndpoint=https://my-files.example.com;SharedAccessSignature=sv=1&sig=x");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->endpoint, "https://my-files.example.com");
}

// An account URL that replaces the string's endpoint: the name only signs (an emulator's may be
// any), the suffix makes nothing, and a SAS needs no name at all.
TEST(ConnectionStringTest, AnEndpointGivenElsewhereLeavesNameAndSuffixUnjudged) {
  const std::string key = std::string(";AccountKey=") + kKey;
  auto r = ParseConnectionString("AccountName=my_acct;EndpointSuffix=not a host" + key, true);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->account, "my_acct");
  EXPECT_EQ(r->endpoint, "");
  r = ParseConnectionString("SharedAccessSignature=sv=1&sig=x", true);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->account, "");
  // What the string itself says is still judged, and a key still needs its name to sign.
  ExpectError("BlobEndpoint=ftp://x" + key, "BlobEndpoint must be an absolute", true);
  ExpectError(std::string("AccountKey=") + kKey, "AccountName is missing (needed with", true);
  ExpectError("AccountName=my_acct" + key, "AccountName makes the blob host's name");
}

// The endpoint is logged: a SAS pasted into it (after '?' or '#') or a user and password would
// be logged with it. Checked as strictly as APP_AZURE_ACCOUNT_URL, without echoing the value.
TEST(ConnectionStringTest, BlobEndpointHoldsNoSasAndNoPassword) {
  const std::string key = std::string(";AccountName=acct;AccountKey=") + kKey;
  for (const char* endpoint : {"https://acct.blob.core.windows.net/#sv=2022-11-02&sig=s3cr3t",
                               "https://acct.blob.core.windows.net#sig=s3cr3t",
                               "https://acct.blob.core.windows.net/?sv=2022-11-02&sig=s3cr3t"}) {
    ExpectError(std::string("BlobEndpoint=") + endpoint + key,
                "BlobEndpoint must not have a query or fragment");
  }
  ExpectError("BlobEndpoint=https://me:s3cr3t@acct.blob.core.windows.net" + key,
              "BlobEndpoint must not hold a user name or password");
  // A '/' in the password ends the authority early, at "me:s3" or at "svc:2024", whose port is a
  // number: refused all the same, without the value.
  for (const char* endpoint :
       {"https://me:s3/cr3t@acct.blob.core.windows.net",
        "https://svc:2024/Xy9@acct.blob.core.windows.net", "http://127.0.0.1:10000/dev@store"}) {
    ExpectError(std::string("BlobEndpoint=") + endpoint + key,
                "BlobEndpoint must not hold a user name or password");
  }
}

TEST(SasCredentialTest, AppendsTokenAndStripsQuestionMark) {
  SasCredential cred("?sv=2021-06-08&sig=abc%2B");
  HttpRequest req;
  req.url = "http://h/a/c/b";
  ASSERT_TRUE(cred.Authorize(req, "a", true).ok());
  EXPECT_EQ(req.url, "http://h/a/c/b?sv=2021-06-08&sig=abc%2B");
  req.url = "http://h/a/c/b?comp=block";
  ASSERT_TRUE(cred.Authorize(req, "a", true).ok());
  EXPECT_EQ(req.url, "http://h/a/c/b?comp=block&sv=2021-06-08&sig=abc%2B");
  EXPECT_EQ(req.FindHeader("Authorization"), nullptr);
  EXPECT_EQ(cred.Describe().find("abc"), std::string::npos);
  // Its fields as they look, and one that holds a signature pasted in, by length only.
  EXPECT_EQ(SasCredential("sv=2021-06-08&sp=rcw&ss=qs3cr3tPasted%3D&sig=x").Describe(),
            "sas(sv=2021-06-08, sp=rcw, ss=(14 characters, not shown))");
}

// A SAS that storage would refuse on every upload, for ever, stops start-up instead: no signature,
// no write or read permission, a scope without blobs, or an expiry already past (as the portal
// writes it, with %3A for ':', or by date only). The message never holds the signature. Storage
// judges what is not clear here.
TEST(SasTokenProblemTest, RefusesWhatStorageWouldRefuseForEver) {
  const auto problem = [](const std::string& token) {
    std::string joined;
    for (const std::string& p : SasTokenProblems(token)) {
      EXPECT_EQ(p.find("s3cr3t"), std::string::npos) << p;
      joined += (joined.empty() ? "" : " | ") + p;
    }
    return joined;
  };
  EXPECT_EQ(problem("sv=2025-11-05&sig="), "has no signature (no sig= parameter, or an empty one)");
  EXPECT_EQ(problem("sv=2025-11-05&xsig=s3cr3t").rfind("has no signature", 0), 0u);
  EXPECT_EQ(problem("sv=2025-11-05&sp=rl&sig=s3cr3t"), "does not allow writes (sp=rl has no w)");
  EXPECT_EQ(problem("sv=2025-11-05&sp=cw&sig=s3cr3t"),
            "does not allow reads (sp=cw has no r), which looking at a blob needs");
  EXPECT_EQ(problem("ss=b&srt=sc&sp=rcwd&sig=s3cr3t"), "does not reach blobs (srt=sc has no o)");
  EXPECT_EQ(problem("ss=qt&srt=co&sp=rcw&sig=s3cr3t"),
            "is not for the blob service (ss=qt has no b)");
  EXPECT_EQ(problem("sr=b&sp=rcw&sig=s3cr3t"),
            "is for one blob (sr=b); give a container SAS (sr=c) or an account SAS");
  EXPECT_EQ(problem("ss=bf&srt=sco&sp=rcw&sig=s3cr3t"), "");
  EXPECT_EQ(problem("sr=c&sp=rcw&sig=s3cr3t"), "");
  EXPECT_EQ(problem("?sv=2025-11-05&sp=rwl&se=2020-01-01T00%3A00%3A00Z&sig=s3cr3t"),
            "expired at 2020-01-01T00:00:00Z (se)");
  EXPECT_EQ(problem("sp=rw&se=2020-01-01&sig=s3cr3t"), "expired at 2020-01-01 (se)");
  EXPECT_EQ(problem("sp=rw&se=2020-01-01T00:00Z&sig=s3cr3t"), "expired at 2020-01-01T00:00Z (se)");
  EXPECT_EQ(problem("?sv=2025-11-05&sp=racwdl&se=2099-12-31T23%3A59%3A59.1234567Z&sig=s3cr3t"), "");
  EXPECT_EQ(problem("sv=2025-11-05&sig=s3cr3t"), "");  // no sp, no se: storage judges
  // A signature pasted into another field (an '&' encoded with it) is not repeated.
  EXPECT_EQ(problem("sv=2025-11-05&sig=x&sp=rl%26sig%3Ds3cr3tPasted%2B%2F%3D"),
            "does not allow writes (sp=(22 characters, not shown) has no w)");
  EXPECT_EQ(problem("ss=qs3cr3tPasted%3D&sig=x"),
            "is not for the blob service (ss=(14 characters, not shown) has no b)");
  EXPECT_EQ(problem("ss=q" + std::string(40, 's') + "&sig=x"),
            "is not for the blob service (ss=(41 characters, not shown) has no b)");
  // Each problem on its own line, not only the first.
  EXPECT_EQ(problem("sv=2022-11-02&sp=c&srt=s&ss=q&se=2020-01-01"),
            "has no signature (no sig= parameter, or an empty one) | does not allow writes (sp=c "
            "has no w) | does not allow reads (sp=c has no r), which looking at a blob needs | "
            "does not reach blobs (srt=s has no o) | is not for the blob service (ss=q has no b) | "
            "expired at 2020-01-01 (se)");
  EXPECT_EQ(problem("https://acct.blob.core.windows.net/c?sp=c&sig=s3cr3t"),
            "is a URL; give only its query (the part after ?)");
  // Not forms read here, left to storage: an offset, a sign, fields out of range.
  for (const char* se : {"2020-01-01T00:00:00%2B01:00", "2020-01--1", "2020-13-01", "2020-01-32",
                         "2020-01-01T24:00Z", "2020-01-01T00:60Z", "+020-01-01"}) {
    EXPECT_EQ(problem(std::string("sp=rw&se=") + se + "&sig=s3cr3t"), "") << se;
  }
}

}  // namespace
}  // namespace nbu::azure
