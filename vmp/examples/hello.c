// A static ELF32 i386 guest program: build with
//   gcc -m32 -nostdlib -static -fno-pic -no-pie -ffreestanding -O1 -o hello hello.c
// and run with `vmp run hello` (prints two lines, exits 42).
static int sys3(int n, int a, int b, int c) { int r; __asm__ volatile("int $0x80" : "=a"(r) : "a"(n), "b"(a), "c"(b), "d"(c) : "memory"); return r; }
static char buf[64];
void _start(void) {
    char *heap = (char *)sys3(45, 0, 0, 0);
    sys3(45, (int)(heap + 4096), 0, 0);
    const char *m = "hello from a static ELF\n";
    int n = 0; while (m[n]) { heap[n] = m[n]; n++; }
    sys3(4, 1, (int)heap, n);
    int pid = sys3(20, 0, 0, 0);
    buf[0] = 'p'; buf[1] = 'i'; buf[2] = 'd'; buf[3] = '='; buf[4] = '0' + pid; buf[5] = '\n';
    sys3(4, 1, (int)buf, 6);
    sys3(1, 42, 0, 0);
    for (;;) {}
}
