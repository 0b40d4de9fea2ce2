// A worker's side of the primary's two-phase reload (messages.ts): prepare from the files the
// primary read, say so, then commit or abort as the primary says. One reload at a time: a
// newer prepare means the primary gave up on the older one. A prepared reload that hears
// neither commit nor abort (a lost message, a stuck primary) is aborted after `giveUpMs`, so
// newly bound ports are never held forever.

import { FileSnapshot } from '../config/file-snapshot.js'
import type { Gateway, ReloadResult, ReloadVote } from '../gateway.js'
import { gatewayEvent } from '../observability/channels.js'
import type { ToPrimary, ToWorker } from './messages.js'

type PrepareMessage = Extract<ToWorker, { type: 'reload-prepare' }>

/** One reload this worker was asked to prepare, until the primary's word (or a timeout) settles it. */
class Turn {
  settled = false
  readonly vote: Promise<ReloadVote>
  private decide: (vote: ReloadVote) => void = () => {}

  constructor(readonly id: number) {
    this.vote = new Promise((resolve) => { this.decide = resolve })
  }

  commit(): void {
    this.settle({ issues: [] })
  }

  abort(why: string): void {
    this.settle({ issues: [{ path: '', message: `reload ${this.id} ${why}` }] })
  }

  private settle(vote: ReloadVote): void {
    if (this.settled) return
    this.settled = true
    this.decide(vote)
  }
}

export class ReloadFollower {
  private current: Turn | null = null
  /** The last reload given up for want of an answer: a commit for it comes too late. */
  private gaveUp: number | null = null

  constructor(private readonly gateway: Pick<Gateway, 'followReload'>, private readonly send: (message: ToPrimary) => void) {}

  /** Resolves when the reload is committed, aborted or refused (the primary has had its answer). */
  async prepare(message: PrepareMessage): Promise<ReloadResult> {
    this.current?.abort(`was replaced by reload ${message.id}`)
    const turn = new Turn(message.id)
    this.current = turn
    const timer = setTimeout(() => this.giveUp(turn, message.giveUpMs), message.giveUpMs)
    let prepared = false
    let result: ReloadResult
    try {
      result = await this.gateway.followReload(FileSnapshot.fromWire(message.files), () => {
        prepared = true
        // Aborted while preparing: the primary has stopped listening for this answer.
        if (!turn.settled) this.send({ type: 'reload-prepared', id: turn.id, errors: [] })
        return turn.vote
      })
    } catch (err) {
      result = { ok: false, errors: [{ path: '', message: (err as Error).message }] }
    } finally {
      clearTimeout(timer)
      if (this.current === turn) this.current = null
    }
    if (!prepared) this.send({ type: 'reload-prepared', id: turn.id, errors: result.errors ?? [] })
    return result
  }

  commit(id: number): void {
    const turn = this.current
    if (turn?.id === id && !turn.settled) turn.commit()
    else if (id === this.gaveUp && gatewayEvent.hasSubscribers) {
      gatewayEvent.publish({
        event: 'reload', ok: false,
        errors: [{ path: '', message: `the primary committed reload ${id} after this worker (pid ${process.pid}) gave up on it: this worker still runs the previous config; restart it` }],
      })
    }
  }

  abort(id: number): void {
    if (this.current?.id === id) this.current.abort('was aborted by the primary (another process could not prepare it)')
  }

  /**
   * Deferred to the check phase: after a long stop (SIGSTOP, a swapped-out process) timers run
   * before the IPC messages already waiting are read, and a commit that did arrive must win.
   */
  private giveUp(turn: Turn, afterMs: number): void {
    setImmediate(() => {
      if (turn.settled) return
      this.gaveUp = turn.id
      turn.abort(`was given up: neither commit nor abort came from the primary within ${afterMs} ms`)
    })
  }
}
