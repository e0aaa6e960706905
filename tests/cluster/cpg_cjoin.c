/*
 * A CPG member written like the C pmxcfs (dfsm.c): the group name is joined
 * with length = strlen(name) + 1. The lab test runs it next to cpg_probe to
 * show that both land in the same group. Same line protocol as cpg_probe
 * (a subset), plus the group name length corosync reports:
 *
 *   ready node_id=N pid=P
 *   confchg group=G namelen=L members=N:P,..
 *   deliver group=G namelen=L from=N:P data=TEXT
 *   stdin: "send TEXT", "quit" or end of input
 *
 * Build: cc -o cpg_cjoin cpg_cjoin.c -lcpg
 */
#include <corosync/cpg.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static void print_name(const struct cpg_name *name) {
    printf("group=%.*s namelen=%u", (int)strnlen(name->value, name->length), name->value,
           name->length);
}

static void deliver(cpg_handle_t handle, const struct cpg_name *group, uint32_t nodeid,
                    uint32_t pid, void *msg, size_t msg_len) {
    (void)handle;
    printf("deliver ");
    print_name(group);
    printf(" from=%u:%u data=%.*s\n", nodeid, pid, (int)msg_len, (const char *)msg);
    fflush(stdout);
}

static void confchg(cpg_handle_t handle, const struct cpg_name *group,
                    const struct cpg_address *members, size_t member_count,
                    const struct cpg_address *left, size_t left_count,
                    const struct cpg_address *joined, size_t joined_count) {
    (void)handle, (void)left, (void)left_count, (void)joined, (void)joined_count;
    printf("confchg ");
    print_name(group);
    printf(" members=");
    for (size_t i = 0; i < member_count; i++)
        printf("%s%u:%u", i ? "," : "", members[i].nodeid, members[i].pid);
    printf("\n");
    fflush(stdout);
}

static cpg_callbacks_t callbacks = {.cpg_deliver_fn = deliver, .cpg_confchg_fn = confchg};

int main(int argc, char **argv) {
    if (argc != 2 || strlen(argv[1]) >= CPG_MAX_NAME_LENGTH) {
        fprintf(stderr, "usage: cpg_cjoin GROUP\n");
        return 2;
    }
    cpg_handle_t handle;
    cs_error_t result = cpg_initialize(&handle, &callbacks);
    if (result != CS_OK) {
        fprintf(stderr, "cpg_initialize: %d\n", result);
        return 1;
    }
    struct cpg_name group;
    memset(&group, 0, sizeof(group));
    strcpy(group.value, argv[1]);
    group.length = strlen(argv[1]) + 1; /* as dfsm.c */
    while ((result = cpg_join(handle, &group)) == CS_ERR_TRY_AGAIN)
        usleep(100 * 1000);
    if (result != CS_OK) {
        fprintf(stderr, "cpg_join: %d\n", result);
        return 1;
    }
    unsigned int nodeid = 0;
    cpg_local_get(handle, &nodeid);
    int fd = -1;
    cpg_fd_get(handle, &fd);
    printf("ready node_id=%u pid=%d\n", nodeid, (int)getpid());
    fflush(stdout);

    char line[4096];
    size_t used = 0;
    for (;;) {
        struct pollfd fds[2] = {{.fd = fd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
        if (poll(fds, 2, -1) < 0)
            continue;
        if (fds[0].revents) {
            result = cpg_dispatch(handle, CS_DISPATCH_ALL);
            if (result != CS_OK && result != CS_ERR_TRY_AGAIN) {
                printf("gone cpg %d\n", result);
                return 3;
            }
        }
        if (!fds[1].revents)
            continue;
        ssize_t got = read(0, line + used, sizeof(line) - 1 - used);
        if (got <= 0)
            break;
        used += (size_t)got;
        char *newline;
        while ((newline = memchr(line, '\n', used))) {
            *newline = 0;
            if (strcmp(line, "quit") == 0)
                goto out;
            if (strncmp(line, "send ", 5) == 0) {
                struct iovec iov = {.iov_base = line + 5, .iov_len = strlen(line + 5)};
                while ((result = cpg_mcast_joined(handle, CPG_TYPE_AGREED, &iov, 1)) ==
                       CS_ERR_TRY_AGAIN)
                    usleep(10 * 1000);
                if (result == CS_OK)
                    printf("sent 1\n");
                else
                    printf("error send %d\n", result);
                fflush(stdout);
            }
            size_t consumed = (size_t)(newline - line) + 1;
            memmove(line, newline + 1, used - consumed);
            used -= consumed;
        }
        if (used == sizeof(line) - 1)
            used = 0; /* overlong line: dropped */
    }
out:
    cpg_leave(handle, &group);
    cpg_finalize(handle);
    return 0;
}
