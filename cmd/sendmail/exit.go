package main

// Exit codes from sysexits.h: callers (PHP, cron, mailx) tell a temporary
// failure (retry later) from a permanent one by these.
const (
	exOK          = 0
	exUsage       = 64 // bad flags, no recipients
	exDataErr     = 65 // the message cannot be accepted as it is
	exNoInput     = 66
	exNoUser      = 67
	exUnavailable = 69
	exSoftware    = 70 // a bug of ours
	exOSErr       = 71
	exCantCreat   = 73 // the spool cannot be written and will not heal by itself
	exIOErr       = 74
	exTempFail    = 75 // try again later: full disk, lock busy, network
	exNoPerm      = 77 // not allowed
	exConfig      = 78 // the configuration is wrong
)
