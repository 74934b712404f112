// Drive the gateway with fhir-kit-client, unmodified; print one JSON object of what each step saw.
// Run by tests/interop/test_fhir_kit_client.py with BASE (the FHIR base URL), TOKEN (an ehr token), TAG and
// SEEDS (JSON: the resources to PUT first) in the environment. A step that throws records its HTTP status.
import { Client } from 'fhir-kit-client';

const { BASE, TOKEN, TAG } = process.env;
const SEEDS = JSON.parse(process.env.SEEDS);
const SEARCHES = JSON.parse(process.env.SEARCHES);
const SYSTEM = 'urn:example:interop:mrn';
const client = new Client({ baseUrl: BASE, bearerToken: TOKEN });
const seen = {};

async function step(name, run) {
  try {
    seen[name] = await run();
  } catch (error) {
    seen[name] = { error: error.response ? error.response.status : String(error) };
  }
}

const ids = (bundle) => (bundle.entry || []).filter((e) => e.search?.mode !== 'include').map((e) => e.resource.id);

for (const body of SEEDS) {
  await client.update({ resourceType: body.resourceType, id: body.id, body });
}

await step('crud', async () => {
  const made = await client.create({ resourceType: 'Patient', body: { resourceType: 'Patient', gender: 'other' } });
  const read = await client.read({ resourceType: 'Patient', id: made.id });
  const changed = await client.update({
    resourceType: 'Patient', id: made.id, body: { ...read, gender: 'female' },
    options: { headers: { 'If-Match': 'W/"1"' } },
  });
  let stale = null;
  try {
    await client.update({
      resourceType: 'Patient', id: made.id, body: { ...read, gender: 'male' },
      options: { headers: { 'If-Match': 'W/"1"' } },
    });
  } catch (error) {
    stale = error.response.status;
  }
  await client.delete({ resourceType: 'Patient', id: made.id });
  let gone = null;
  try {
    await client.read({ resourceType: 'Patient', id: made.id });
  } catch (error) {
    gone = error.response.status;
  }
  return { created: made.meta.versionId, updated: changed.meta.versionId, gender: changed.gender, stale, gone };
});

await step('lostUpdate', async () => {
  const made = await client.create({ resourceType: 'Patient', body: { resourceType: 'Patient', active: true } });
  const a = await client.read({ resourceType: 'Patient', id: made.id });
  let b = await client.read({ resourceType: 'Patient', id: made.id });
  for (const gender of ['female', 'other']) {
    b = await client.update({ resourceType: 'Patient', id: made.id, body: { ...b, gender } });
  }
  await client.update({ resourceType: 'Patient', id: made.id, body: { ...a, birthDate: '1990-04-02' } });
  const stored = await client.read({ resourceType: 'Patient', id: made.id });
  return { birthDate: stored.birthDate, versionId: stored.meta.versionId };
});

await step('searches', async () => {
  const found = [];
  for (const [resourceType, searchParams] of SEARCHES) {
    found.push(ids(await client.search({ resourceType, searchParams })));
  }
  return found;
});

await step('paging', async () => {
  let bundle = await client.search({ resourceType: 'Appointment', searchParams: { patient: `pa-${TAG}`, _count: 1 } });
  const all = [...ids(bundle)];
  while (bundle.link.some((l) => l.relation === 'next')) {
    bundle = await client.nextPage({ bundle });
    all.push(...ids(bundle));
  }
  const counted = await client.search({
    resourceType: 'Appointment', searchParams: { patient: `pa-${TAG}`, _summary: 'count' },
  });
  const included = await client.search({
    resourceType: 'Appointment', searchParams: { _id: `ap1-${TAG}`, _include: 'Appointment:patient' },
  });
  const posted = await client.search({
    resourceType: 'Appointment', searchParams: { patient: `pa-${TAG}`, _sort: '-date' }, options: { postSearch: true },
  });
  return {
    all: all.sort(), total: counted.total, counted: (counted.entry || []).length,
    included: included.entry.map((e) => `${e.search.mode}:${e.resource.id}`).sort(), posted: ids(posted),
  };
});

await step('conditional', async () => {
  const body = { resourceType: 'Patient', identifier: [{ system: SYSTEM, value: `K-${TAG}` }] };
  const headers = { 'If-None-Exist': `identifier=${SYSTEM}|K-${TAG}` };
  const first = await client.create({ resourceType: 'Patient', body, options: { headers } });
  const again = await client.create({ resourceType: 'Patient', body, options: { headers } });
  const updated = await client.update({
    resourceType: 'Patient', searchParams: { identifier: `${SYSTEM}|K-${TAG}` }, body: { ...body, gender: 'other' },
  });
  await client.request(`Patient?identifier=${encodeURIComponent(`${SYSTEM}|K-${TAG}`)}`, { method: 'DELETE' });
  const left = await client.search({ resourceType: 'Patient', searchParams: { identifier: `${SYSTEM}|K-${TAG}` } });
  return { same: first.id === again.id && again.id === updated.id, gender: updated.gender, left: left.total };
});

await step('patchAndHistory', async () => {
  const patched = await client.patch({
    resourceType: 'Appointment', id: `ap2-${TAG}`,
    jsonPatch: [{ op: 'replace', path: '/status', value: 'noshow' }],
    options: { headers: { 'If-Match': 'W/"1"' } },
  });
  const history = await client.history({ resourceType: 'Appointment', id: `ap2-${TAG}` });
  const typed = await client.typeHistory({ resourceType: 'Appointment', options: {} });
  return {
    status: patched.status, versionId: patched.meta.versionId, type: history.type,
    methods: history.entry.map((e) => e.request.method), typed: typed.type,
  };
});

await step('bundles', async () => {
  const transaction = await client.transaction({
    body: {
      resourceType: 'Bundle', type: 'transaction', entry: [{
        resource: {
          resourceType: 'Observation', status: 'final', code: { text: 'mood' },
          subject: { reference: `Patient?identifier=${SYSTEM}|A-${TAG}` },
        },
        request: { method: 'POST', url: 'Observation' },
      }],
    },
    options: { headers: { Prefer: 'return=OperationOutcome' } },
  });
  const obsId = transaction.entry[0].response.location.split('/')[1];
  const obs = await client.read({ resourceType: 'Observation', id: obsId });
  const batch = await client.batch({
    body: {
      resourceType: 'Bundle', type: 'batch', entry: [
        { request: { method: 'GET', url: `Patient/pa-${TAG}` } },
        { request: { method: 'GET', url: 'Patient/never-was' } },
      ],
    },
  });
  return {
    subject: obs.subject.reference, outcome: transaction.entry[0].response.outcome?.resourceType,
    batch: batch.entry.map((e) => e.response.status.slice(0, 3)),
  };
});

process.stdout.write(JSON.stringify(seen));
