/*
 * testguest-smp: the BSP wakes the other vCPUs with INIT-SIPI-SIPI. Each AP
 * runs a real-mode trampoline at 0x8000 up to long mode, prints its APIC id
 * under a spinlock and counts itself; the BSP waits for all of them.
 */
#include "testguest.h"

#define TRAMPOLINE_BASE 0x8000UL          /* below 1 MiB, page aligned */
#define SIPI_VECTOR     (TRAMPOLINE_BASE >> 12)
#define MAX_CPUS        64                /* the VMM's limit */
#define AP_STACK_SIZE   4096

#define LAPIC_BASE      0xfee00000UL
#define LAPIC_SVR       0x0f0
#define LAPIC_ICR_LO    0x300
#define LAPIC_ICR_HI    0x310
#define SVR_ENABLE      0x100
#define ICR_INIT        0x00500
#define ICR_STARTUP     0x00600
#define ICR_PENDING     0x01000           /* delivery status: send pending */
#define ICR_ASSERT      0x04000
#define ICR_ALL_BUT_SELF 0xc0000          /* destination shorthand */
#define ICR_POLL_LIMIT  1000
#define IPI_DELAY_SPINS 100               /* KVM needs no real delay */

/* Result codes. */
enum { FAIL_TIMEOUT = 1, FAIL_COUNT = 2 };

#define XSTR(x) STR(x)
#define STR(x) #x
/* Offset of a trampoline label from its start, as an address at TRAMPOLINE_BASE. */
#define TR(label) XSTR(TRAMPOLINE_BASE) " + " #label " - ap_trampoline"

/*
 * Copied to TRAMPOLINE_BASE; an AP starts at its first byte in real mode
 * (CS = SIPI_VECTOR << 8, IP = 0). It loads its own GDT, enters 32-bit
 * protected mode, enables PAE with the BSP's CR3, EFER.LME and paging, and
 * far-jumps to 64-bit code, which takes the next AP stack and calls ap_main.
 * The BSP fills in tr_cr3, tr_stacks and tr_entry after copying.
 */
__asm__(
	"	.pushsection .text.ap_trampoline, \"ax\"\n"
	"	.balign 16\n"
	"	.globl ap_trampoline, ap_trampoline_end\n"
	"	.globl tr_cr3, tr_stacks, tr_entry\n"
	"	.code16\n"
	"ap_trampoline:\n"
	"	cli\n"
	"	cld\n"
	"	movw	%cs, %ax\n"
	"	movw	%ax, %ds\n"
	"	lgdtl	tr_gdtr - ap_trampoline\n"           /* DS = CS: offsets */
	"	movl	%cr0, %eax\n"
	"	andl	$0x9fffffff, %eax\n"              /* caches on: clear CD, NW */
	"	orl	$0x1, %eax\n"                     /* PE */
	"	movl	%eax, %cr0\n"
	"	ljmpl	$0x08, $(" TR(tr_pm32) ")\n"
	"	.code32\n"
	"tr_pm32:\n"
	"	movw	$0x10, %ax\n"
	"	movw	%ax, %ds\n"
	"	movw	%ax, %es\n"
	"	movw	%ax, %ss\n"
	"	movw	%ax, %fs\n"
	"	movw	%ax, %gs\n"
	"	movl	%cr4, %eax\n"
	"	orl	$0x20, %eax\n"                    /* PAE */
	"	movl	%eax, %cr4\n"
	"	movl	" TR(tr_cr3) ", %eax\n"
	"	movl	%eax, %cr3\n"
	"	movl	$0xc0000080, %ecx\n"              /* EFER */
	"	rdmsr\n"
	"	orl	$0x100, %eax\n"                   /* LME */
	"	wrmsr\n"
	"	movl	%cr0, %eax\n"
	"	orl	$0x80000000, %eax\n"              /* PG */
	"	movl	%eax, %cr0\n"
	"	ljmpl	$0x18, $(" TR(tr_lm64) ")\n"
	"	.code64\n"
	"tr_lm64:\n"
	"	movl	$1, %eax\n"
	"	lock xaddl %eax, " TR(tr_next) "\n"   /* eax = this AP's number */
	"	incl	%eax\n"
	"	shlq	$12, %rax\n"                      /* * AP_STACK_SIZE */
	"	addq	" TR(tr_stacks) ", %rax\n"
	"	movq	%rax, %rsp\n"
	"	xorl	%ebp, %ebp\n"
	"	movq	" TR(tr_entry) ", %rax\n"
	"	call	*%rax\n"
	"1:	cli\n"
	"	hlt\n"
	"	jmp	1b\n"
	"	.balign 8\n"
	"tr_gdt:\n"
	"	.quad	0\n"
	"	.quad	0x00cf9b000000ffff\n"            /* 0x08: 32-bit code */
	"	.quad	0x00cf93000000ffff\n"            /* 0x10: data */
	"	.quad	0x00af9b000000ffff\n"            /* 0x18: 64-bit code */
	"tr_gdtr:\n"
	"	.word	tr_gdtr - tr_gdt - 1\n"
	"	.long	" TR(tr_gdt) "\n"
	"	.balign 8\n"
	"tr_cr3:	.quad	0\n"
	"tr_stacks:	.quad	0\n"                     /* base of ap_stacks */
	"tr_entry:	.quad	0\n"                     /* ap_main */
	"tr_next:	.long	0\n"                     /* APs started so far */
	"ap_trampoline_end:\n"
	"	.popsection\n");

extern const uint8_t ap_trampoline[], ap_trampoline_end[];
extern const uint8_t tr_cr3[], tr_stacks[], tr_entry[];

/* AP n (from 0) runs on ap_stacks[n]; the trampoline adds 1 to get its top. */
static uint8_t ap_stacks[MAX_CPUS - 1][AP_STACK_SIZE] __attribute__((aligned(16)));
_Static_assert(AP_STACK_SIZE == 1 << 12, "the trampoline shifts by 12");

static volatile uint32_t print_lock;
static volatile uint32_t cpus_up;   /* APs that reached ap_main */

static int try_lock(void)
{
	uint32_t expected = 0;
	/* lock cmpxchg */
	return __atomic_compare_exchange_n(&print_lock, &expected, 1, 0,
					   __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

static void lock(void)
{
	while (!try_lock())
		cpu_relax();
}

/* The BSP does not wait forever for an AP that never lets go: 1 if locked. */
static int lock_bounded(void)
{
	uint64_t start = rdtsc();

	while (!try_lock())
		if (rdtsc() - start > TIMEOUT_TSC)
			return 0;
	return 1;
}

static void unlock(void)
{
	__atomic_store_n(&print_lock, 0, __ATOMIC_RELEASE);
}

static uint32_t apic_id(void)
{
	uint32_t a, b, c, d;
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
	return b >> 24;
}

__attribute__((noreturn, used)) void ap_main(void);

void ap_main(void)
{
	uint32_t id = apic_id();

	lock();
	puts_serial("smp: cpu ");
	print_dec(id);
	puts_serial(" up\n");
	__atomic_fetch_add(&cpus_up, 1, __ATOMIC_SEQ_CST);
	unlock();
	for (;;)
		__asm__ volatile("cli; hlt" : : : "memory");
}

static void patch(const uint8_t *slot, uint64_t v)
{
	uint64_t at = TRAMPOLINE_BASE + (uint64_t)(slot - ap_trampoline);
	*(volatile uint64_t *)at = v;
}

static void spin(int n)
{
	while (n--)
		cpu_relax();
}

/* Sends an IPI to every CPU but this one; 0, or -1 if it stays pending. */
static int ipi_all_but_self(uint32_t icr)
{
	mmio_write32(LAPIC_BASE + LAPIC_ICR_HI, 0);
	mmio_write32(LAPIC_BASE + LAPIC_ICR_LO, ICR_ALL_BUT_SELF | icr);
	for (int i = 0; i < ICR_POLL_LIMIT; i++)
		if (!(mmio_read32(LAPIC_BASE + LAPIC_ICR_LO) & ICR_PENDING))
			return 0;
	return -1;
}

int guest_main(void)
{
	uint32_t count = *(volatile uint32_t *)CPU_COUNT_ADDR;

	if (count == 1) {
		puts_serial("smp: 1 cpu\n");
		return 0;
	}
	if (count == 0 || count > MAX_CPUS) {
		puts_serial("smp: FAIL cpu count ");
		print_dec(count);
		puts_serial("\n");
		return FAIL_COUNT;
	}

	/* The LAPIC is at 0xfee00000: we need the 0-4 GiB map, and so do the APs. */
	map_4gib();
	uint64_t cr3;
	__asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
	memcpy((void *)TRAMPOLINE_BASE, ap_trampoline,
	       (size_t)(ap_trampoline_end - ap_trampoline));
	patch(tr_cr3, cr3);
	patch(tr_stacks, (uint64_t)(uintptr_t)ap_stacks);
	patch(tr_entry, (uint64_t)(uintptr_t)ap_main);
	barrier();

	mmio_write32(LAPIC_BASE + LAPIC_SVR,
		     mmio_read32(LAPIC_BASE + LAPIC_SVR) | SVR_ENABLE | 0xff);
	int err = ipi_all_but_self(ICR_INIT | ICR_ASSERT);
	spin(IPI_DELAY_SPINS);
	err |= ipi_all_but_self(ICR_STARTUP | ICR_ASSERT | SIPI_VECTOR);
	spin(IPI_DELAY_SPINS);
	err |= ipi_all_but_self(ICR_STARTUP | ICR_ASSERT | SIPI_VECTOR);

	uint64_t start = rdtsc();
	while (__atomic_load_n(&cpus_up, __ATOMIC_ACQUIRE) < count - 1 &&
	       rdtsc() - start < TIMEOUT_TSC)
		cpu_relax();

	uint32_t up = __atomic_load_n(&cpus_up, __ATOMIC_ACQUIRE);
	int locked = lock_bounded();
	if (up < count - 1 || !locked) {
		puts_serial("smp: FAIL ");
		print_dec(up + 1);
		puts_serial(" of ");
		print_dec(count);
		puts_serial(" cpus up");
		if (err)
			puts_serial(" (an IPI stayed pending)");
		if (!locked)
			puts_serial(" (print lock held)");
		puts_serial("\n");
		return FAIL_TIMEOUT;
	}
	puts_serial("smp: ");
	print_dec(count);
	puts_serial(" cpus up\n");
	unlock();
	return 0;
}
