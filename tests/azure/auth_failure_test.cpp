// AuthFailureDetail on the bodies Azure answers a refused request with: the reason is kept, on
// one line and bounded, and no signature, SAS field or string to sign comes out of it.
#include "azure/auth_failure.h"

#include <gtest/gtest.h>

namespace nbu::azure {
namespace {

// An Azure error body as storage writes it, with `detail` (already XML-escaped) if not empty.
std::string Body(const std::string& code, const std::string& detail) {
  std::string body = "\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>" + code +
                     "</Code><Message>Server failed to authenticate the request. Make sure the "
                     "value of Authorization header is formed correctly including the "
                     "signature.\nRequestId:5c8c3b2e-701e-0055-2a6e-b8a3f0000000\n"
                     "Time:2024-05-02T10:00:00.1234567Z</Message>";
  if (!detail.empty()) {
    body += "<AuthenticationErrorDetail>" + detail + "</AuthenticationErrorDetail>";
  }
  return body + "</Error>";
}

TEST(AuthFailureDetailTest, AClockTooFarOffIsNamedWithItsDate) {
  EXPECT_EQ(AuthFailureDetail(Body("AuthenticationFailed",
                                   "Request date header too old: 'Thu, 02 May 2024 09:40:00 GMT'")),
            "Request date header too old: 'Thu, 02 May 2024 09:40:00 GMT'");
}

TEST(AuthFailureDetailTest, SasAndTokenReasonsAreKeptAsTheyAre) {
  for (const std::string detail :
       {"Signature not valid in the specified time frame: Start [Thu, 02 May 2024 10:00:00 GMT] "
        "- Expiry [Thu, 02 May 2024 11:00:00 GMT] - Current [Thu, 02 May 2024 12:00:00 GMT]",
        "Signed expiry time [Thu, 02 May 2024 10:00:00 GMT] must be after signed start time "
        "[Thu, 02 May 2024 11:00:00 GMT]",
        "Issuer validation failed. Issuer did not match."}) {
    EXPECT_EQ(AuthFailureDetail(Body("AuthenticationFailed", detail)), detail);
  }
}

// The request's signature is valid for that request for a while; the string to sign names its
// headers and metadata. Neither is echoed; the reason is.
TEST(AuthFailureDetailTest, TheRequestsSignatureAndTheStringToSignAreLeftOut) {
  const std::string detail =
      "The MAC signature found in the HTTP request 'q0Fo8mZ7xQ3nT1vK2bR9cW4eY6uI5oP8aS7dF0gH1jk=' "
      "is not the same as any computed signature. Server used following string to sign: "
      "'PUT\n\n\n3\n\n\n\n\n\n\n\n\nx-ms-blob-type:BlockBlob\nx-ms-date:Thu, 02 May 2024 "
      "10:00:00 GMT\nx-ms-meta-session:payroll\nx-ms-version:2025-11-05\n/acct/c/blob'.";
  const std::string got = AuthFailureDetail(Body("AuthenticationFailed", detail));
  EXPECT_EQ(got,
            "The MAC signature found in the HTTP request 'REDACTED' is not the same as any "
            "computed signature. [string to sign left out]");
}

// A SAS's string to sign lists its fields (permissions, times, resource, signed identifier):
// not echoed either, and a sig= value never, wherever storage might quote one.
TEST(AuthFailureDetailTest, ASasStringToSignAndAnySigValueAreLeftOut) {
  EXPECT_EQ(AuthFailureDetail(Body("AuthenticationFailed",
                                   "Signature did not match. String to sign used was "
                                   "rw\n2024-05-01T00:00:00Z\n2024-05-09T00:00:00Z\n/blob/acct/"
                                   "c\npolicy-1\n\nhttps\n2025-11-05\nc\n\n\n\n\n\n")),
            "Signature did not match. [string to sign left out]");
  const std::string got = AuthFailureDetail(
      Body("AuthenticationFailed",
           "Query 'sv=2025-11-05&amp;sp=rw&amp;sig=AbC%2Bdef%3D&amp;se=2024' is not valid"));
  EXPECT_EQ(got, "Query 'sv=2025-11-05&sp=rw&sig=REDACTED&se=2024' is not valid");
  EXPECT_EQ(got.find("AbC"), std::string::npos);
}

// However storage words or encodes it (a line break in a phrase, numeric character references,
// "String-to-sign"), no signature and no string to sign comes out.
TEST(AuthFailureDetailTest, NoSecretThroughLineBreaksEntitiesOrSpellings) {
  const std::string sig = "q0Fo8mZ7xQ3nT1vK2bR9cW4eY6uI5oP8aS7dF0gH1jk=";
  for (const std::string& detail :
       {"The MAC signature found in the HTTP\nrequest '" + sig + "' is not the same.",
        "The MAC signature found in the HTTP request &#39;" + sig + "&#x27; is not the same.",
        "The MAC signature " + sig + " is not the same.",
        "Signature did not match. String to\nsign used was rw /blob/acct/c/" + sig,
        "Signature did not match. String-to-sign: rw /blob/acct/c/" + sig,
        "Signature did not match. StringToSign: rw /blob/acct/c/" + sig,
        "Query sig&#61;" + sig.substr(0, 20) + " is not valid"}) {
    const std::string got = AuthFailureDetail(Body("AuthenticationFailed", detail));
    EXPECT_EQ(got.find(sig.substr(0, 20)), std::string::npos) << got;
    EXPECT_EQ(got.find("/blob/acct"), std::string::npos) << got;
    EXPECT_FALSE(got.empty()) << detail;
  }
}

TEST(AuthFailureDetailTest, OneLineBoundedAndEmptyWithoutADetail) {
  EXPECT_EQ(AuthFailureDetail(Body("AuthorizationPermissionMismatch", "")), "");
  EXPECT_EQ(AuthFailureDetail(""), "");
  EXPECT_EQ(AuthFailureDetail(Body("AuthenticationFailed", "  line one\r\n\tline  two \n")),
            "line one line two");
  EXPECT_EQ(AuthFailureDetail("<Error><AuthenticationErrorDetail>cut &apos;short"), "cut 'short");
  const std::string long_detail =
      std::string(292, 'a') + "\xC3\xA9\xC3\xA9\xC3\xA9" + std::string(400, 'b');
  const std::string got = AuthFailureDetail(Body("AuthenticationFailed", long_detail));
  EXPECT_LE(got.size(), kMaxAuthFailureDetail);
  EXPECT_EQ(got.substr(got.size() - 3), "...");
  // Not cut inside the two bytes of an é: the bytes before "..." end with whole characters.
  EXPECT_EQ(got, std::string(292, 'a') + "\xC3\xA9\xC3\xA9" + "...");
}

// Details no storage sends, but a proxy, a gateway or a broken server may, up to the 4 MiB a
// response body is read to: a run of token characters far longer than any key (libstdc++'s regex
// recursed once per character and overflowed the stack: the process died), and megabytes of sig=
// values (redacted by a pass over the whole text each). Bounded, and without a secret or part of
// one: a key that the reading of the detail's first bytes cuts in two is left out whole.
TEST(AuthFailureDetailTest, AHugeDetailIsReadInPartWithoutASecretOrACrash) {
  const std::string run = AuthFailureDetail(
      Body("AuthenticationFailed", "Key " + std::string(1 << 20, 'k') + "9 and then"));
  EXPECT_EQ(run, "Key");
  // A key the cut splits at each of its characters: written plain, and with a character
  // reference (which the XML may hold), the cut before, inside and after it.
  for (const std::string& key : {std::string("Zk3ExampleAccountKeyBase64Value0123456789+/Aa=="),
                                 "Zk3Exa12&#43;" + std::string(100, 'B')}) {
    for (size_t blanks = 16'000; blanks < 16'400; ++blanks) {
      const std::string got = AuthFailureDetail(
          Body("AuthenticationFailed", std::string(blanks, '\n') + "Key " + key + " end"));
      ASSERT_EQ(got.find("Zk3E"), std::string::npos) << blanks << ": " << got;
    }
  }
  std::string spam;
  while (spam.size() < (4u << 20)) spam += "sig=a ";
  const std::string sigs = AuthFailureDetail(Body("AuthenticationFailed", spam));
  EXPECT_LE(sigs.size(), kMaxAuthFailureDetail);
  EXPECT_EQ(sigs.rfind("sig=REDACTED sig=REDACTED", 0), 0u) << sigs;
  EXPECT_EQ(sigs.find("sig=a"), std::string::npos) << sigs;
}

}  // namespace
}  // namespace nbu::azure
