/*
 * PVH entry of testguest-pvh. The VMM enters pvh_start32 (named by the Xen
 * PHYS32_ENTRY note below) in flat 32-bit protected mode with paging off and
 * EBX = the hvm_start_info's physical address. We keep EBX for the C code,
 * switch to long mode on our own identity map of the first 1 GiB, and join
 * the common 64-bit entry (_start in start.S), as Linux's pvh_start_xen does.
 */
#define MSR_EFER     0xc0000080
#define EFER_LME     (1 << 8)
#define CR0_PE       (1 << 0)
#define CR0_PG       (1 << 31)
#define CR4_PAE      (1 << 5)

	.section .note.Xen, "a"
	.balign 4
	.long 4                 /* namesz: "Xen\0" */
	.long 4                 /* descsz */
	.long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long pvh_start32

	.text
	.code32
	.globl pvh_start32
	.type pvh_start32, @function
pvh_start32:
	cli
	cld
	movl	%ebx, pvh_start_info_paddr
	movl	%cr4, %eax
	orl	$CR4_PAE, %eax
	movl	%eax, %cr4
	movl	$pvh_pml4, %eax
	movl	%eax, %cr3
	movl	$MSR_EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$(CR0_PE | CR0_PG), %eax
	movl	%eax, %cr0
	lgdt	pvh_gdt_desc
	ljmp	$0x08, $pvh_start64
	.size pvh_start32, . - pvh_start32

	.code64
pvh_start64:
	movl	$0x10, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%eax, %fs
	movl	%eax, %gs
	jmp	_start

	.section .rodata
	.balign 8
pvh_gdt:
	.quad 0
	.quad 0x00af9a000000ffff        /* 0x08: 64-bit code */
	.quad 0x00cf92000000ffff        /* 0x10: data */
pvh_gdt_end:
pvh_gdt_desc:
	.word pvh_gdt_end - pvh_gdt - 1
	.long pvh_gdt

	.section .data
	.balign 4096
pvh_pml4:
	.quad pvh_pdpt + 0x3
	.fill 511, 8, 0
pvh_pdpt:
	.quad pvh_pd + 0x3
	.fill 511, 8, 0
pvh_pd:                                 /* 512 x 2 MiB: present, writable, large */
	.set page, 0
	.rept 512
	.quad (page << 21) | 0x83
	.set page, page + 1
	.endr

	.section .note.GNU-stack, "", @progbits
