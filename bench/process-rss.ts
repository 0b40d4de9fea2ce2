// Resident memory of a process and its descendants (a gateway with workers is a process
// tree), read from /proc: VmRSS in /proc/PID/status, children from /proc/PID/task/*/children.
import { readFileSync, readdirSync } from 'node:fs'

function ownRssBytes(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status)
    return match ? Number(match[1]) * 1024 : 0
  } catch {
    return 0
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = []
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim()
      if (text) for (const child of text.split(/\s+/)) out.push(Number(child))
    }
  } catch {
    // The process is gone, or /proc has no children files (kernel without CONFIG_PROC_CHILDREN).
  }
  return out
}

/** VmRSS of `pid` plus all its descendants, in bytes (0 when it is gone). */
export function treeRssBytes(pid: number): number {
  let total = ownRssBytes(pid)
  for (const child of childrenOf(pid)) total += treeRssBytes(child)
  return total
}
