"""The whole path with the kind of profile containerd sends by default: a reduced copy of
moby/containerd's default (errno EPERM by default, a long allow list, argument-filtered
personality/socket/clone, clone3 -> ENOSYS, amd64 + x86 + x32), planned, compiled, checked
syscall by syscall, then loaded in a child that runs a real shell."""

import ctypes
import errno
import json
import os

import pytest

from runtime import seccomp
from runtime.seccomp import bpf
from test_seccomp_kernel import exited_ok, reap, start

pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64 numbers")

ALLOWED = """
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat
fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64
fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64
futex_wait futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32
geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp
getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit
get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday
getuid getuid32 getxattr inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel
ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup
io_submit ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown
lchown32 lgetxattr link linkat listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr
lstat lstat64 madvise map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat
mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open
mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl
msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat
_newselect open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc
pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64
process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink
readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr
rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask
rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select
semctl semget semop semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto
setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid
setpriority setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32
setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn
socketcall socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun
timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime
timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit
umask uname unlink unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid
waitpid write writev
""".split()

CLONE_NS_FLAGS = 2114060288  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
PERSONALITIES = (0, 8, 131072, 131080, 4294967295)

DEFAULT_PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "syscalls": [
        {"names": ALLOWED, "action": "SCMP_ACT_ALLOW"},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]},  # no AF_VSOCK
        *({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
           "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]} for v in PERSONALITIES),
        {"names": ["arch_prctl", "modify_ldt"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": CLONE_NS_FLAGS, "valueTwo": 0,
                   "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
    ],
}

X86_64, I386, X32 = 0xC000003E, 0x40000003, 1 << 30
ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x00050001, 0x00050026


@pytest.fixture(scope="module")
def newest():
    """The largest x86_64 number the profile names, as this libseccomp knows them (2.5.4 as
    patched by Debian knows up to futex_requeue = 456): one above it is 'newer'."""
    return max(seccomp.resolve(n) for n in ALLOWED if seccomp.resolve(n) is not None)


@pytest.fixture(scope="module")
def profile():
    return seccomp.parse(DEFAULT_PROFILE)


@pytest.fixture(scope="module")
def program(profile):
    return seccomp.compile(profile)


def test_plan_of_the_default_profile(profile):
    rules = seccomp.plan(profile)
    assert len(rules) == len(ALLOWED) + 1 + len(PERSONALITIES) + 2 + 1 + 1
    assert [r.name for r in rules[:len(ALLOWED)]] == ALLOWED
    assert all(r.action == "SCMP_ACT_ALLOW" and not r.conditions for r in rules[:len(ALLOWED)])
    personality = [r for r in rules if r.name == "personality"]
    assert [r.conditions[0].value for r in personality] == list(PERSONALITIES)
    (clone,) = [r for r in rules if r.name == "clone"]
    assert (clone.conditions[0].op, clone.conditions[0].value) == ("SCMP_CMP_MASKED_EQ",
                                                                   CLONE_NS_FLAGS)
    assert (rules[-1].name, rules[-1].action, rules[-1].errno) == ("clone3", "SCMP_ACT_ERRNO", 38)
    assert seccomp.filter_flags(profile) & 0x4  # no flags given: SPEC_ALLOW, as runc


def test_compiled_default_profile_verdicts(program, newest):
    prog = bpf.decode(program)
    assert len(prog) <= bpf.MAX_INSNS
    for nr, args, want in [
            (0, (), ALLOW),                       # read
            (59, (), ALLOW),                      # execve
            (163, (), EPERM),                     # acct: not allowed, default errno
            (272, (), EPERM),                     # unshare
            (435, (), ENOSYS),                    # clone3: explicit, so glibc falls back
            (newest, (), ALLOW),
            (newest + 1, (), ENOSYS),             # newer than the profile: the stub
            (newest + 40, (), ENOSYS),
            (135, (131080,), ALLOW), (135, (1,), EPERM),
            (41, (2,), ALLOW), (41, (40,), EPERM),
            (56, (0x01200011,), ALLOW), (56, (0x10000000 | 0x11,), EPERM)]:  # CLONE_NEWUSER
        assert bpf.evaluate(prog, nr, X86_64, args) == want, nr
    assert bpf.evaluate(prog, 3, I386) == ALLOW           # read on i386
    assert bpf.evaluate(prog, 102, I386) == ALLOW         # socketcall
    assert bpf.evaluate(prog, X32 | 0, X86_64) == ALLOW   # read on x32
    assert bpf.evaluate(prog, X32 | 163, X86_64) == EPERM


def test_default_profile_in_a_child(program, profile, newest):
    flags = seccomp.filter_flags(profile)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def raw(nr, *args):
        return ctypes.get_errno() if libc.syscall(nr, *args) < 0 else 0

    def body():
        seccomp.install(program, flags)
        # newest + 1 exists on recent kernels (statmount on 6.8+): ENOSYS here is the stub's
        got = (raw(163, None), raw(272, 0x20000), raw(435, None, 0), raw(newest + 1, None, None))
        return 0 if got == (errno.EPERM, errno.EPERM, errno.ENOSYS, errno.ENOSYS) else 1

    assert exited_ok(reap(start(body)))


def test_a_real_shell_runs_under_the_default_profile(program, profile):
    flags = seccomp.filter_flags(profile)
    r, w = os.pipe()

    def body():
        os.dup2(w, 1)
        os.dup2(w, 2)
        seccomp.install(program, flags)
        # fork+exec of /bin/true exercises clone's MASKED_EQ; unshare must be refused
        os.execv("/bin/sh", ["sh", "-c", "echo ok; /bin/true && echo forked; "
                                         "grep ^Seccomp: /proc/self/status; unshare -m true"])

    pid = start(body)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    status = reap(pid)
    assert out.startswith("ok\nforked\nSeccomp:\t2\n"), out
    assert "Operation not permitted" in out
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0  # unshare failed


def test_profile_survives_a_json_round_trip():
    # the profile is plain JSON data: what containerd writes into config.json
    assert seccomp.parse(json.loads(json.dumps(DEFAULT_PROFILE))) == seccomp.parse(DEFAULT_PROFILE)
