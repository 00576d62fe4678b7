const $ = (id) => document.getElementById(id);

function showError(message) {
  $('error').textContent = message;
  $('error').style.display = message ? 'block' : 'none';
}

// GET a JSON route; a 4xx / 5xx becomes an Error carrying the server's detail.
async function getJSON(url) {
  const response = await fetch(url);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    throw new Error(`${detail} (HTTP ${response.status})`);
  }
  return body;
}
