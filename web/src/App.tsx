import { lazy, Suspense } from 'react';
import { NavLink, Route, Routes } from 'react-router-dom';
import { ConnectionIndicator } from './components/ConnectionIndicator';
import { TokenPrompt } from './components/TokenPrompt';
import { JobsPage } from './pages/JobsPage';
import { SubmitPage } from './pages/SubmitPage';
import { JobDetailPage } from './pages/JobDetailPage';
import { TaskDetailPage } from './pages/TaskDetailPage';
import { DeadLettersPage } from './pages/DeadLettersPage';
import { WorkersPage } from './pages/WorkersPage';
// Recharts is most of the bundle: loaded with the analytics page only.
const AnalyticsPage = lazy(() =>
  import('./pages/AnalyticsPage').then((m) => ({ default: m.AnalyticsPage })),
);

export function App() {
  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <span className="brand">Shoal</span>
        <nav aria-label="Main">
          <NavLink to="/" end>
            Jobs
          </NavLink>
          <NavLink to="/submit">Submit</NavLink>
          <NavLink to="/analytics">Analytics</NavLink>
          <NavLink to="/workers">Workers</NavLink>
          <NavLink to="/dead-letters">Dead letters</NavLink>
        </nav>
        <ConnectionIndicator />
      </header>
      <main id="main" tabIndex={-1}>
        <TokenPrompt />
        <Routes>
          <Route path="/" element={<JobsPage />} />
          <Route path="/submit" element={<SubmitPage />} />
          <Route path="/jobs/:id" element={<JobDetailPage />} />
          <Route path="/jobs/:id/tasks/:index" element={<TaskDetailPage />} />
          <Route path="/workers" element={<WorkersPage />} />
          <Route path="/dead-letters" element={<DeadLettersPage />} />
          <Route
            path="/analytics"
            element={
              <Suspense fallback={<p aria-busy="true">Loading…</p>}>
                <AnalyticsPage />
              </Suspense>
            }
          />
          <Route
            path="*"
            element={
              <section>
                <h1>Not found</h1>
                <p>
                  This page does not exist. <NavLink to="/">Back to the jobs</NavLink>
                </p>
              </section>
            }
          />
        </Routes>
      </main>
    </>
  );
}
