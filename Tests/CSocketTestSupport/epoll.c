#include "CSocketTestSupport.h"
#include <errno.h>
#include <sys/epoll.h>

int ts_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int ts_epoll_control(int ep, int fd, int modify, uint32_t events, uint64_t data) {
    struct epoll_event ev = {.events = events, .data = {.u64 = data}};
    return epoll_ctl(ep, modify ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
}

int ts_epoll_wait(int ep, uint64_t *data, uint32_t *events, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(ep, evs, max, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -1;
    for (int i = 0; i < n; i++) { data[i] = evs[i].data.u64; events[i] = evs[i].events; }
    return n;
}
