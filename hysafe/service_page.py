"""The search page of ``hysafe serve``: plain HTML and JavaScript, no build step. With ``?q=...``
in the URL it runs that query on load (what the browser test does).
"""

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>hysafe search</title><style>
body{font-family:system-ui,sans-serif;margin:16px;background:#fafafa}form{margin-bottom:12px}
.cols{display:flex;gap:10px;align-items:flex-start}.col{background:#fff;border:1px solid #ddd;padding:8px;width:230px}
.col h3{margin:0 0 6px;font-size:14px}.hit{display:inline-block;width:104px;font-size:11px;text-align:center;margin:2px}
.hit img{width:96px;height:96px;object-fit:cover}.badge{padding:0 4px;border-radius:3px;color:#fff}
.safe{background:#2ca02c}.unsafe{background:#d62728}.unknown{background:#999}#err{color:#d62728}</style></head><body>
<h1>hysafe: what each model retrieves</h1>
<form id="f"><input id="q" size="50" placeholder="a text query"> or <input id="img" type="file" accept="image/*">
k <input id="k" type="number" value="5" min="1" max="100" style="width:4em">
tau <input id="tau" value="avg" size="6" title="HySAC traversal: a number or a rule (avg, up_95, paper, authors)">
<button>search</button></form><div id="err"></div><div class="cols" id="cols"></div>
<script>
const $=id=>document.getElementById(id);
async function run(){
  $('err').textContent='';let r;
  if($('img').files.length){const fd=new FormData();fd.append('image',$('img').files[0]);fd.append('k',$('k').value);fd.append('tau',$('tau').value);
    r=await fetch('/search',{method:'POST',body:fd});}
  else{r=await fetch('/search',{method:'POST',headers:{'Content-Type':'application/json'},
    body:JSON.stringify({text:$('q').value,k:parseInt($('k').value),tau:$('tau').value})});}
  const data=await r.json();if(!r.ok){$('err').textContent=data.error+' ('+data.field+')';return;}
  const cols=$('cols');cols.innerHTML='';
  for(const [name,hits] of Object.entries(data.results)){
    const c=document.createElement('div');c.className='col';c.dataset.model=name;
    c.innerHTML='<h3>'+name+'</h3>'+hits.map(h=>'<div class="hit">'+(h.thumb?'<img src="'+h.thumb+'">':'<div>'+h.text+'</div>')+
      '<br><span class="badge '+h.label+'">'+h.label+'</span> '+h.score.toFixed(3)+'</div>').join('');
    cols.appendChild(c);}
  await Promise.all([...document.images].map(i=>i.complete?0:new Promise(ok=>{i.onload=i.onerror=ok;})));
  document.body.dataset.done=JSON.stringify(Object.fromEntries([...document.querySelectorAll('.col')].map(c=>
    [c.dataset.model,[...c.querySelectorAll('img')].filter(i=>i.naturalWidth>0).length])));
}
$('f').addEventListener('submit',e=>{e.preventDefault();run();});
const p=new URLSearchParams(location.search);if(p.get('q')){$('q').value=p.get('q');if(p.get('k'))$('k').value=p.get('k');run();}
</script></body></html>"""
