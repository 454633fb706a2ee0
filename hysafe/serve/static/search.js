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
