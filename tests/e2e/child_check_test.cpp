// The end-of-test check of a program under test (ChildProcess::CheckAtEnd), on /bin/sh children
// that behave as a service might: it fails the test on a sanitizer's report in the child's part
// of the log, on an exit status other than 0 the test did not see, and on a child that SIGTERM
// does not stop; and passes a child that stops cleanly, one left stopped included.
#include "support/process.h"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <string>

namespace nbu::test {
namespace {

using namespace std::chrono_literals;
constexpr size_t npos = std::string::npos;

// A shell that runs `script`, then (unless the script exits) waits to be told to stop: SIGTERM
// ends it with status 0, as the service ends.
void RunChecked(const std::string& log, const std::string& script,
                std::chrono::milliseconds stop_within = 10s) {
  ChildProcess child(
      {"/bin/sh", "-c", "trap 'exit 0' TERM; " + script + "; " + "while :; do sleep 0.05; done"},
      {}, log);
  child.CheckAtEnd(stop_within);
  ASSERT_TRUE(
      WaitFor([&] { return child.ReadLog().find("started", child.log_start()) != npos; }, 10s));
}

TempDir& Dir() {
  static TempDir dir;
  return dir;
}

void CleanChild() { RunChecked(Dir() / "clean.log", "echo started"); }

void UbsanReportWhileRunning() {
  RunChecked(Dir() / "ubsan.log",
             "echo started; echo 'src/core/x.cpp:10:5: runtime error: signed integer overflow'; "
             "echo '    #0 0x1 in nbu::core::F() src/core/x.cpp:10'");
}

void LeakReportAtExit() {
  // LeakSanitizer reports as the process exits, after the test's last look at the log.
  RunChecked(Dir() / "leak.log",
             "trap 'echo \"==7==ERROR: LeakSanitizer: detected memory leaks\"; "
             "echo \"SUMMARY: AddressSanitizer: 24 byte(s) leaked in 1 allocation(s).\"; exit 23' "
             "TERM; echo started");
}

void IgnoresSigterm() { RunChecked(Dir() / "stuck.log", "trap '' TERM; echo started", 300ms); }

void ReportBeforeSigkill() {
  ChildProcess child(
      {"/bin/sh", "-c", "echo '==9==ERROR: AddressSanitizer: heap-use-after-free'; exec sleep 60"},
      {}, Dir() / "killed.log");
  child.CheckAtEnd(10s);
  ASSERT_TRUE(WaitFor([&] { return !child.ReadLog().empty(); }, 10s));
  child.Signal(SIGKILL);
  ASSERT_EQ(child.Wait(10s), 128 + SIGKILL);  // on purpose: the status is not held against it
}

void CrashNotWaitedFor() {
  ChildProcess child({"/bin/sh", "-c", "echo 'about to fail'; exit 3"}, {}, Dir() / "crash.log");
  child.CheckAtEnd(10s);
  ASSERT_TRUE(WaitFor([&] { return !child.Running(); }, 10s));
}

TEST(ChildCheck, AChildThatStopsCleanlyPasses) { CleanChild(); }

TEST(ChildCheck, AChildLeftStoppedIsResumedAndPasses) {
  ChildProcess child(
      {"/bin/sh", "-c", "trap 'exit 0' TERM; echo started; while :; do sleep 0.05; done"}, {},
      Dir() / "stopped.log");
  child.CheckAtEnd(10s);
  ASSERT_TRUE(WaitFor([&] { return !child.ReadLog().empty(); }, 10s));
  child.Signal(SIGSTOP);
}

// A SIGCONT sent to a child that is exiting discards the stop LeakSanitizer sends as it attaches
// for its check at exit, and the child hangs there. So a running child gets SIGTERM alone. Here
// both signals would be pending when the shell's 50 ms sleep ends, and its CONT trap would run.
TEST(ChildCheck, AChildNotLeftStoppedIsSentNoSigcont) {
  const std::string log = Dir() / "no-cont.log";
  {
    ChildProcess child({"/bin/sh", "-c",
                        "trap 'echo got-TERM; done=1' TERM; trap 'echo got-CONT' CONT; "
                        "echo started; while [ -z \"$done\" ]; do sleep 0.05; done; exit 0"},
                       {}, log);
    child.CheckAtEnd(10s);
    ASSERT_TRUE(WaitFor([&] { return !child.ReadLog().empty(); }, 10s));
  }
  const std::string out = ReadFile(log);
  EXPECT_NE(out.find("got-TERM"), npos) << out;
  EXPECT_EQ(out.find("got-CONT"), npos) << out;
}

TEST(ChildCheck, AnExitStatusTheTestTookIsNotHeldAgainstTheChild) {
  ChildProcess child({"/bin/sh", "-c", "exit 2"}, {}, Dir() / "two.log");
  child.CheckAtEnd(10s);
  EXPECT_EQ(child.Wait(10s), 2);
}

TEST(ChildCheck, ASanitizerReportInTheLogFailsTheTest) {
  EXPECT_NONFATAL_FAILURE(UbsanReportWhileRunning(), "runtime error: signed integer overflow");
  EXPECT_NONFATAL_FAILURE(UbsanReportWhileRunning(), "#0 0x1 in nbu::core::F()");  // the stack
  EXPECT_NONFATAL_FAILURE(UbsanReportWhileRunning(), "ChildCheck.ASanitizerReportInTheLogFails");
}

TEST(ChildCheck, ALeakReportedAtTheExitFailsTheTest) {
  EXPECT_NONFATAL_FAILURE(LeakReportAtExit(), "exited with status 23 after the SIGTERM");
  EXPECT_NONFATAL_FAILURE(LeakReportAtExit(), "LeakSanitizer: detected memory leaks");
}

TEST(ChildCheck, AReportWrittenBeforeASigkillFailsTheTest) {
  EXPECT_NONFATAL_FAILURE(ReportBeforeSigkill(), "AddressSanitizer: heap-use-after-free");
}

TEST(ChildCheck, AChildThatSigtermDoesNotStopIsKilledAndFailsTheTest) {
  EXPECT_NONFATAL_FAILURE(IgnoresSigterm(), "did not exit within 300 ms of the SIGTERM");
}

TEST(ChildCheck, AnExitStatusTheTestDidNotTakeFailsTheTest) {
  EXPECT_NONFATAL_FAILURE(CrashNotWaitedFor(), "exited with status 3 during the test");
  EXPECT_NONFATAL_FAILURE(CrashNotWaitedFor(), "about to fail");  // the log's last lines
}

// A log a replica's restarts append to: each process answers for its own lines only.
TEST(ChildCheck, OnlyTheChildsOwnPartOfASharedLogCounts) {
  const std::string log = Dir() / "shared.log";
  WriteFile(log, "src/a.cpp:1:1: runtime error: a predecessor's report\n");
  RunChecked(log, "echo started");
}

TEST(ChildCheck, TheReportQuotesTheFirstReportWholeAndLaterMarkedLines) {
  std::string log = "{\"message\":\"ready\"}\n";
  log += "==1==ERROR: AddressSanitizer: heap-buffer-overflow\n";
  for (int i = 0; i < 100; ++i) log += "    #" + std::to_string(i) + " frame\n";
  log += "SUMMARY: AddressSanitizer: heap-buffer-overflow x.cpp:3\n";
  const std::string report = SanitizerReport(log);
  EXPECT_EQ(report.find("ready"), std::string::npos) << report;
  EXPECT_EQ(report.rfind("==1==ERROR: AddressSanitizer", 0), 0u) << report;
  EXPECT_NE(report.find("#58 frame\n"), std::string::npos) << report;  // 60 lines of it
  EXPECT_EQ(report.find("#59 frame\n"), std::string::npos) << report;
  EXPECT_NE(report.find("...\nSUMMARY: AddressSanitizer"), std::string::npos) << report;
  EXPECT_EQ(SanitizerReport("{\"message\":\"stopped\"}\n"), "");
}

}  // namespace
}  // namespace nbu::test
