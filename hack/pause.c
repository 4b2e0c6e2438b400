/* The pause program of pyshim's CRI sandbox image (hack/mkimage.py --pause builds the image).
 *
 * What a Kubernetes sandbox ("pause") container needs and no more: it holds the pod's
 * namespaces by staying alive, reaps every child that is reparented to it (it is pid 1 of the
 * pod's pid namespace when the pod shares one, e.g. shareProcessNamespace), and exits 0 on
 * SIGINT or SIGTERM, which is how StopPodSandbox stops it. Build: gcc -static -O2 -o pause pause.c
 * `pause -v` prints its version and exits.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "pyshim-pause 1.0"

static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

static void on_chld(int sig) {
    (void)sig;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    errno = saved;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts(VERSION);
        return 0;
    }
    if (getpid() != 1)
        fprintf(stderr, "pause: warning: not pid 1 (pid %d)\n", (int)getpid());
    struct sigaction term = {.sa_handler = on_term};
    sigemptyset(&term.sa_mask);
    struct sigaction chld = {.sa_handler = on_chld, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
    sigemptyset(&chld.sa_mask);
    if (sigaction(SIGINT, &term, NULL) < 0 || sigaction(SIGTERM, &term, NULL) < 0 ||
        sigaction(SIGCHLD, &chld, NULL) < 0) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;)
        pause();
    fprintf(stderr, "pause: error: infinite loop terminated\n");
    return 42;
}
