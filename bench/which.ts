import { execFileSync } from 'node:child_process'

/** Whether `command` is on PATH. */
export function onPath(command: string): boolean {
  try {
    execFileSync('/bin/sh', ['-c', `command -v ${command}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}
