import { gql } from 'urql';

export const JOB_FIELDS = gql`
  fragment JobFields on Job {
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
  }
`;

export const JOBS_QUERY = gql`
  query Jobs($first: Int, $after: String, $status: [JobStatus!], $jobType: String, $search: String) {
    jobs(first: $first, after: $after, status: $status, jobType: $jobType, search: $search) {
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
  ${JOB_FIELDS}
`;

export const JOBS_CHANGED = gql`
  subscription JobsChanged {
    jobsChanged {
      jobIds
      everything
    }
  }
`;

export const JOB_QUERY = gql`
  query Job($id: ID!, $first: Int, $after: String, $status: [TaskStatus!]) {
    job(id: $id) {
      ...JobFields
      parameters
      maxAttempts
      timeoutSeconds
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
          }
        }
        pageInfo {
          hasNextPage
          endCursor
        }
      }
    }
  }
  ${JOB_FIELDS}
`;

export const JOB_EXECUTION_QUERY = gql`
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
`;

export const HISTORY_QUERY = gql`
  query JobHistory($id: ID!, $first: Int, $after: String) {
    job(id: $id) {
      id
      history(first: $first, after: $after) {
        edges {
          cursor
          node {
            eventType
            at
            taskIndex
            attempt
            worker
            error
            step
          }
        }
        pageInfo {
          hasNextPage
          endCursor
        }
      }
    }
  }
`;

export const JOB_UPDATED = gql`
  subscription JobUpdated($id: ID!) {
    jobUpdated(id: $id) {
      id
      status
      completedTasks
      failedTasks
    }
  }
`;

export const SUBMIT_JOB = gql`
  mutation SubmitJob($input: SubmitJobInput!) {
    submitJob(input: $input) {
      id
      status
    }
  }
`;

export const CANCEL_JOB = gql`
  mutation CancelJob($id: ID!, $reason: String) {
    cancelJob(id: $id, reason: $reason) {
      id
      status
    }
  }
`;

export const RETRY_FAILED = gql`
  mutation RetryFailed($jobId: ID!) {
    retryFailedTasks(jobId: $jobId) {
      retriedTasks
    }
  }
`;

export const REDRIVE = gql`
  mutation Redrive($jobId: ID) {
    redriveDeadLetters(jobId: $jobId) {
      redriven
      resent
      removed
    }
  }
`;

export const ANALYTICS_QUERY = gql`
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
`;

export const ANALYTICS_UPDATED = gql`
  subscription AnalyticsUpdated {
    analyticsUpdated {
      __typename
    }
  }
`;

export const JOB_TYPES_QUERY = gql`
  query JobTypes {
    analytics {
      jobsByType {
        jobType
        count
      }
    }
  }
`;
