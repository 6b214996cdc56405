/*
 * Stand-in for registry.k8s.io/e2e-test-images/nonewprivs: prints the
 * effective uid. Installed setuid root, so a container running it as a
 * non-root user prints 0 unless no_new_privs keeps the setuid bit from
 * taking effect. A script cannot stand in: the kernel ignores setuid on scripts.
 */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	printf("Effective uid: %d\n", (int)geteuid());
	return 0;
}
