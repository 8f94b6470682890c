// The XML helpers that read storage's answers (azure/xml.h).
#include "azure/xml.h"

#include <gtest/gtest.h>

#include <string>

namespace nbu::azure {
namespace {

TEST(XmlElementTest, FindsElementsInOrderWithOrWithoutAttributes) {
  const std::string xml =
      R"(<Blobs><Blob><Name>a</Name></Blob><Blob><Name Encoded="true">b%01</Name></Blob>)"
      R"(</Blobs><NextMarker />)";
  size_t pos = 0;
  const auto first = XmlElement(xml, "Blob", pos, xml.size(), &pos);
  ASSERT_TRUE(first.has_value());
  std::string attributes = "stale";
  EXPECT_EQ(XmlElement(*first, "Name", 0, first->size(), nullptr, &attributes), "a");
  EXPECT_EQ(attributes, "");
  const auto second = XmlElement(xml, "Blob", pos, xml.size(), &pos);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(XmlElement(*second, "Name", 0, second->size(), nullptr, &attributes), "b%01");
  EXPECT_EQ(attributes, R"( Encoded="true")");
  EXPECT_FALSE(XmlElement(xml, "Blob", pos, xml.size(), &pos).has_value());
  // Self-closing: no text, not found.
  EXPECT_FALSE(XmlElement(xml, "NextMarker", 0, xml.size()).has_value());
}

TEST(XmlElementTest, ANameThatOnlyStartsTheSameIsAnotherElement) {
  const std::string xml = "<NameX>no</NameX><Names>no</Names><Name>yes</Name>";
  EXPECT_EQ(XmlElement(xml, "Name", 0, xml.size()), "yes");
}

TEST(XmlElementTest, AnElementMustCloseWithinTheLimit) {
  const std::string xml = "<Block><Name>n</Name></Block><Block><Name>m</Name>";
  size_t pos = 0;
  EXPECT_EQ(XmlElement(xml, "Block", pos, xml.size(), &pos), "<Name>n</Name>");
  EXPECT_FALSE(XmlElement(xml, "Block", pos, xml.size(), &pos).has_value());  // cut short
  EXPECT_FALSE(XmlElement(xml, "Name", 0, 10).has_value());  // closes past the limit
}

TEST(XmlUnescapeTest, NamedAndNumericReferences) {
  EXPECT_EQ(XmlUnescape("a&amp;b &lt;c&gt; &quot;d&quot; &apos;e&apos;"), "a&b <c> \"d\" 'e'");
  EXPECT_EQ(XmlUnescape("&#39;&#x27;&#X41;"), "''A");
  // Past ASCII, as UTF-8: e-acute, a CJK character, an emoji.
  EXPECT_EQ(XmlUnescape("caf&#233; &#x65E5; &#x1F600;"),
            "caf\xC3\xA9 \xE6\x97\xA5 \xF0\x9F\x98\x80");
  // &amp;lt; is the text "&lt;", not "<".
  EXPECT_EQ(XmlUnescape("&amp;lt;"), "&lt;");
}

TEST(XmlUnescapeTest, WhatIsNoCharacterIsKeptAsWritten) {
  for (const std::string text : {"&#0;", "&#xD800;", "&#x110000;", "&#;", "&#x;", "&#12a;",
                                 "&nbsp;", "&#39", "& alone", "&#99999999;"}) {
    EXPECT_EQ(XmlUnescape(text), text);
  }
}

}  // namespace
}  // namespace nbu::azure
