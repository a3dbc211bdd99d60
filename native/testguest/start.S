/*
 * Entry of every flatgrid test guest. The VMM enters here in 64-bit long
 * mode with RSP = 0, interrupts off and an identity map of the first 1 GiB.
 * We set up our own stack in .bss and hand over to C; tg_start never returns.
 */
	.section .text.start, "ax"
	.globl _start
	.type _start, @function
_start:
	cli
	cld
	leaq	stack_top(%rip), %rsp
	xorl	%ebp, %ebp
	call	tg_start
1:	hlt
	jmp	1b
	.size _start, . - _start

	.section .bss
	.balign 16
stack_bottom:
	.skip 16384
stack_top:

	.section .note.GNU-stack, "", @progbits
