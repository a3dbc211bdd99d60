/** Progress lines for the operator, while a long step runs. */
export type Progress = (line: string) => void;

export const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
