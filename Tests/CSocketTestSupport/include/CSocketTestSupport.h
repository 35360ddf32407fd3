// epoll for the tests' socket clients (the slow-header flood): Swift's Glibc module does not import <sys/epoll.h>,
// and `struct epoll_event` is packed on x86-64, so the tests call these thin wrappers instead.
#ifndef C_SOCKET_TEST_SUPPORT_H
#define C_SOCKET_TEST_SUPPORT_H
#include <stdint.h>

enum {
    TS_EPOLLIN = 0x001,
    TS_EPOLLOUT = 0x004,
    TS_EPOLLERR = 0x008,
    TS_EPOLLHUP = 0x010,
};

/// A close-on-exec epoll instance, or -1 (errno set).
int ts_epoll_create(void);
/// Adds (`modify` 0) or changes (`modify` 1) `fd`'s level-triggered interest `events`, tagged `data`. 0 or -1.
int ts_epoll_control(int ep, int fd, int modify, uint32_t events, uint64_t data);
/// Waits up to `timeout_ms` for at most `max` ready descriptors; writes each one's tag and events. Returns how many
/// (0 on timeout or EINTR), or -1.
int ts_epoll_wait(int ep, uint64_t *data, uint32_t *events, int max, int timeout_ms);

#endif
