import { graphql, type ResultOf } from './graphql';

// `@_unmask`: the fields are read where the query is used (no fragment masking).
export const JOB_FIELDS = graphql(`
  fragment JobFields on Job @_unmask {
    id
    jobType
    status
    totalTasks
    tasksCreated
    completedTasks
    failedTasks
    runningTasks
    queuedTasks
    retryingTasks
    progress
    createdAt
    updatedAt
    startedAt
    completedAt
    errorMessage
    cancelReason
    priority
  }
`);

export const JOBS_QUERY = graphql(`
  query Jobs(
    $first: Int
    $after: String
    $status: [JobStatus!]
    $jobType: String
    $search: String
    $sort: JobSortOrder! = NEWEST
  ) {
    jobs(first: $first, after: $after, status: $status, jobType: $jobType, search: $search, sort: $sort) {
      edges {
        cursor
        node {
          ...JobFields
        }
      }
      pageInfo {
        hasNextPage
        endCursor
      }
    }
  }
`, [JOB_FIELDS]);

export const JOBS_CHANGED = graphql(`
  subscription JobsChanged {
    jobsChanged {
      jobIds
      everything
    }
  }
`);

export const JOB_QUERY = graphql(`
  query Job($id: ID!, $first: Int, $after: String, $status: [TaskStatus!], $asOf: DateTime) {
    job(id: $id, asOf: $asOf) {
      ...JobFields
      asOf
      parameters
      maxAttempts
      timeoutSeconds
      maxConcurrency
      concurrencyKey
      limits {
        kind
        name
        maxConcurrency
        ratePerSecond
      }
      tasks(first: $first, after: $after, status: $status) {
        edges {
          cursor
          node {
            id
            index
            status
            attempt
            maxAttempts
            worker
            errorMessage
            startedAt
            completedAt
            processingTimeSeconds
            deadLettered
            waitingReason {
              kind
              detail
            }
          }
        }
        pageInfo {
          hasNextPage
          endCursor
        }
      }
    }
  }
`, [JOB_FIELDS]);

export const JOB_EXECUTION_QUERY = graphql(`
  query JobExecution($id: ID!) {
    job(id: $id) {
      id
      execution {
        arn
        consoleUrl
        currentState
        stateTransition
      }
    }
  }
`);

export const HISTORY_QUERY = graphql(`
  query JobHistory(
    $id: ID!
    $first: Int
    $after: String
    $asOf: DateTime
    $newestFirst: Boolean
    $eventTypes: [String!]
    $taskIndex: Int
  ) {
    job(id: $id, asOf: $asOf) {
      id
      history(
        first: $first
        after: $after
        newestFirst: $newestFirst
        eventTypes: $eventTypes
        taskIndex: $taskIndex
      ) {
        edges {
          cursor
          node {
            eventType
            at
            taskId
            taskIndex
            attempt
            worker
            actor
            error
            step
            priority
            previousPriority
          }
        }
        pageInfo {
          hasNextPage
          endCursor
        }
      }
    }
  }
`);

export const JOB_UPDATED = graphql(`
  subscription JobUpdated($id: ID!) {
    jobUpdated(id: $id) {
      id
      status
      completedTasks
      failedTasks
    }
  }
`);

export const SUBMIT_JOB = graphql(`
  mutation SubmitJob($input: SubmitJobInput!) {
    submitJob(input: $input) {
      id
      status
    }
  }
`);

export const CANCEL_JOB = graphql(`
  mutation CancelJob($id: ID!, $reason: String) {
    cancelJob(id: $id, reason: $reason) {
      id
      status
    }
  }
`);

export const SET_JOB_PRIORITY = graphql(`
  mutation SetJobPriority($jobId: ID!, $priority: Int!) {
    setJobPriority(jobId: $jobId, priority: $priority) {
      id
      priority
    }
  }
`);

export const RETRY_FAILED = graphql(`
  mutation RetryFailed($jobId: ID!) {
    retryFailedTasks(jobId: $jobId) {
      retriedTasks
    }
  }
`);

export const REDRIVE = graphql(`
  mutation Redrive($jobId: ID) {
    redriveDeadLetters(jobId: $jobId) {
      redriven
      resent
      removed
    }
  }
`);

export const ANALYTICS_QUERY = graphql(`
  query Analytics($days: Int!) {
    analytics {
      overview {
        totalJobs
        completedJobs
        failedJobs
        runningJobs
        pendingJobs
        cancelledJobs
        successRate
        totalTasks
        completedTasks
        failedTasks
        runningTasks
        pendingTasks
        retryingTasks
        avgProcessingTimeSeconds
      }
      jobsByType {
        jobType
        count
      }
      jobsByStatus {
        status
        count
      }
      tasksByStatus {
        status
        count
      }
      timeline(days: $days) {
        date
        jobsSubmitted
        tasksCompleted
        tasksFailed
      }
      processingTime {
        count
        min
        avg
        p50
        p95
        p99
        max
      }
      throughput(minutes: 60) {
        minute
        tasksCompleted
        tasksFailed
      }
    }
  }
`);

export const ANALYTICS_UPDATED = graphql(`
  subscription AnalyticsUpdated {
    analyticsUpdated {
      __typename
    }
  }
`);

export const JOB_TYPES_QUERY = graphql(`
  query JobTypes {
    analytics {
      jobsByType {
        jobType
        count
      }
    }
  }
`);

// The result types the pages use, inferred from the documents above.

/** A job's own fields, as the jobs list shows them. */
export type Job = ResultOf<typeof JOB_FIELDS>;
/** A job with its parameters, limits and one page of tasks, as the job page shows it. */
export type JobDetail = NonNullable<ResultOf<typeof JOB_QUERY>['job']>;
export type Task = JobDetail['tasks']['edges'][number]['node'];
export type JobHistory = NonNullable<ResultOf<typeof HISTORY_QUERY>['job']>['history'];
export type HistoryEvent = JobHistory['edges'][number]['node'];

export const TASK_DETAIL_QUERY = graphql(`
  query TaskDetail($id: ID!, $eventsFirst: Int) {
    task(id: $id) {
      id
      jobId
      index
      jobType
      status
      attempt
      maxAttempts
      timeoutSeconds
      worker
      parameters
      result
      errorMessage
      createdAt
      updatedAt
      startedAt
      completedAt
      nextAttemptAt
      processingTimeSeconds
      deadLettered
      waitingReason {
        kind
        detail
      }
      attempts {
        attempt
        queuedAt
        notBefore
        worker
        startedAt
        endedAt
        durationMs
        outcome
        error
        retryBackoffMs
        retryManual
        deadLetterReason
      }
      events(first: $eventsFirst) {
        edges {
          cursor
          node {
            eventType
            at
            attempt
            worker
            error
          }
        }
        pageInfo {
          hasNextPage
        }
      }
    }
  }
`);

export const TASK_UPDATED = graphql(`
  subscription TaskUpdated($jobId: ID!) {
    taskUpdated(jobId: $jobId) {
      truncated
      tasks {
        index
      }
    }
  }
`);

export type TaskDetail = NonNullable<ResultOf<typeof TASK_DETAIL_QUERY>['task']>;
export type TaskAttempt = TaskDetail['attempts'][number];

export const JOB_TIMELINE_QUERY = graphql(`
  query JobTimeline(
    $id: ID!
    $asOf: DateTime
    $groupBy: TimelineGroup
    $from: DateTime
    $to: DateTime
    $maxBars: Int
  ) {
    job(id: $id, asOf: $asOf) {
      id
      timeline(groupBy: $groupBy, from: $from, to: $to, maxBars: $maxBars, slowest: 10) {
        from
        to
        groupBy
        laneCount
        workers
        attemptCount
        aggregated
        bars {
          taskIndex
          attempt
          lane
          worker
          queuedAt
          startedAt
          endedAt
          durationMs
          outcome
        }
        buckets {
          laneFrom
          laneTo
          from
          to
          attempts
          failed
          running
        }
        slowest {
          taskIndex
          attempt
          worker
          durationMs
          outcome
        }
        medianMs
        p95Ms
      }
    }
  }
`);

export type JobTimeline = NonNullable<ResultOf<typeof JOB_TIMELINE_QUERY>['job']>['timeline'];

export const DEAD_LETTERS_QUERY = graphql(`
  query DeadLetters($limit: Int) {
    deadLetters(limit: $limit) {
      id
      jobId
      taskId
      reason
      deadLetteredAt
      bodyPreview
    }
  }
`);

export const REDRIVE_SELECTED = graphql(`
  mutation RedriveSelected($taskIds: [ID!]) {
    redriveDeadLetters(taskIds: $taskIds) {
      redriven
      resent
      removed
      skipped
    }
  }
`);

export type DeadLetter = ResultOf<typeof DEAD_LETTERS_QUERY>['deadLetters'][number];

export const WORKERS_QUERY = graphql(`
  query Workers {
    workers {
      id
      host
      queue
      version
      status
      slotsTotal
      slotsUsed
      tasksPerSecond
      tasksCompleted
      tasksFailed
      startedAt
      lastHeartbeatAt
      secondsSinceHeartbeat
      heartbeatIntervalSeconds
    }
  }
`);

export type WorkerInfo = ResultOf<typeof WORKERS_QUERY>['workers'][number];
