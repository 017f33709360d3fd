// printable(): whatever a sandbox or a sender chose reaches the operator's terminal as visible text,
// never as a terminal command (the hostile suite checks one path end to end; this checks the bytes).
#include <gtest/gtest.h>

#include "cli/cli.h"

using moat::cli::Lines;
using moat::cli::printable;

TEST(CliPrintable, PlainTextAndUtf8PassThrough) {
  EXPECT_EQ(printable("hello, world"), "hello, world");
  EXPECT_EQ(printable("grüße, 日本, 🙂"), "grüße, 日本, 🙂");
  EXPECT_EQ(printable("\u00a0 nbsp and \u00ff"), "\u00a0 nbsp and \u00ff");  // just past C1: printable
  EXPECT_EQ(printable(""), "");
}

TEST(CliPrintable, C0ControlsAndDelAreEscaped) {
  EXPECT_EQ(printable("\x1b[2J\x1b]0;title\x07"), "\\x1b[2J\\x1b]0;title\\x07");
  EXPECT_EQ(printable(std::string_view("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(printable("back\bspace\rcr\x7f"), "back\\x08space\\x0dcr\\x7f");
}

TEST(CliPrintable, C1ControlsInUtf8AreEscaped) {
  // U+009B is CSI on terminals that honour 8-bit controls; U+0085 is NEL; U+009D is OSC.
  EXPECT_EQ(printable("\xc2\x9b" "31m red"), "\\u009b31m red");
  EXPECT_EQ(printable("a\xc2\x85z\xc2\x9d"), "a\\u0085z\\u009d");
  // A lone 0xc2 at the end is not a C1 character; it is left for the terminal to show as invalid.
  EXPECT_EQ(printable("end\xc2"), "end\xc2");
}

TEST(CliPrintable, NewlinesAndTabsAreKeptOrEscapedAsAsked) {
  EXPECT_EQ(printable("line one\n\tline two", Lines::Keep), "line one\n\tline two");
  EXPECT_EQ(printable("line one\n\tline two", Lines::Escape), "line one\\n\\tline two");
  EXPECT_EQ(printable("a\x1b" "b\n", Lines::Keep), "a\\x1bb\n");
}
